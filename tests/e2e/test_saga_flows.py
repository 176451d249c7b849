"""The transfer saga across stock, supplier and transfer, all in-process on one real broker.

The "Must show" flows of the transfer issue: a peer fills a short outlet; a supplier fills
it when no peer can; a decline and a silent supplier are re-matched; an expired request
leaves nothing reserved anywhere.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_catalog.config import CatalogSettings
from jejaring_catalog.entrypoints.app import create_app as create_catalog
from jejaring_shared.contracts.topics import (
    CATALOG_EVENTS,
    STOCK_COMMANDS,
    STOCK_EVENTS,
    SUPPLIER_EVENTS,
    TRANSFER_EVENTS,
)
from jejaring_shared.settings import KafkaSettings
from jejaring_stock.config import StockSettings
from jejaring_stock.entrypoints.app import create_app as create_stock
from jejaring_supplier.config import SupplierSettings
from jejaring_supplier.entrypoints.app import create_app as create_supplier
from jejaring_transfer.config import TransferSettings
from jejaring_transfer.entrypoints.app import create_app as create_transfer
from support.kafka_io import read_all
from support.wait import wait_until


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Stack:
    catalog: httpx.AsyncClient
    stock: httpx.AsyncClient
    supplier: httpx.AsyncClient
    transfer: httpx.AsyncClient
    transfer_app: FastAPI


async def skip_history(bootstrap: str, groups: dict[str, list[str]]) -> None:
    """Start these consumer groups at the topics' ends: earlier tests on the session's
    broker left many events and commands, which a new group would otherwise replay."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from jejaring_shared.kafka import ensure_topics

    await ensure_topics(
        KafkaSettings(bootstrap_servers=bootstrap), {t for ts in groups.values() for t in ts}
    )
    for group, topics in groups.items():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            for t in topics:
                parts = consumer.partitions_for_topic(t)
                while not parts:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(t)
                tps += [TopicPartition(t, p) for p in sorted(parts)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit(dict(ends.items()))
        finally:
            await consumer.stop()


@asynccontextmanager
async def stack(tmp: Any, bootstrap: str, **transfer_extra: Any) -> AsyncIterator[Stack]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0)
    tag = uuid.uuid4().hex[:8]
    # Every test gets consumer groups of its own, so no test waits for the previous test's
    # members to leave.
    supplier_catalog_group = f"supplier-catalog-e2e-{tag}"
    supplier_transfer_group = f"supplier-transfer-e2e-{tag}"
    await skip_history(
        bootstrap,
        {
            supplier_catalog_group: [CATALOG_EVENTS],
            supplier_transfer_group: [TRANSFER_EVENTS],
            f"stock-e2e-{tag}": [STOCK_COMMANDS],
            f"transfer-e2e-{tag}-stock": [STOCK_EVENTS],
            f"transfer-e2e-{tag}-supplier": [SUPPLIER_EVENTS],
            f"transfer-e2e-{tag}-catalog": [CATALOG_EVENTS],
        },
    )
    apps = {
        "catalog": create_catalog(
            CatalogSettings(
                database_url=f"sqlite+aiosqlite:///{tmp}/catalog.db",
                kafka=kafka,
                relay_idle_poll_s=0.1,
            )
        ),
        "stock": create_stock(
            StockSettings(
                database_url=f"sqlite+aiosqlite:///{tmp}/stock.db",
                kafka=kafka,
                relay_idle_poll_s=0.1,
                commands_group=f"stock-e2e-{tag}",
            )
        ),
        "supplier": create_supplier(
            SupplierSettings(
                database_url=f"sqlite+aiosqlite:///{tmp}/supplier.db",
                kafka=kafka,
                relay_idle_poll_s=0.1,
                catalog_group=supplier_catalog_group,
                transfer_group=supplier_transfer_group,
            )
        ),
        "transfer": create_transfer(
            TransferSettings(
                database_url=f"sqlite+aiosqlite:///{tmp}/transfer.db",
                kafka=kafka,
                relay_idle_poll_s=0.1,
                group_prefix=f"transfer-e2e-{tag}",
                deadline_poll_s=0.1,
                rematch_interval_s=0.5,
                **transfer_extra,
            )
        ),
    }
    async with AsyncExitStack() as es:
        clients = {}
        for name, app in apps.items():
            await es.enter_async_context(
                LifespanManager(app, startup_timeout=90, shutdown_timeout=30)
            )
            clients[name] = await es.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
            )
        for app in apps.values():

            async def assigned(app: FastAPI = app) -> bool:
                return all(r.assigned for r in app.state.runtime.consumers)

            await wait_until(assigned, timeout=90, what="consumers assigned")
        yield Stack(
            clients["catalog"],
            clients["stock"],
            clients["supplier"],
            clients["transfer"],
            apps["transfer"],
        )


async def ok(resp: httpx.Response, *codes: int) -> dict[str, Any]:
    assert resp.status_code in (codes or (200, 201, 202)), resp.text
    body: dict[str, Any] = resp.json()
    return body


async def outlet(s: Stack, oid: str, community: str, lat: float, lon: float) -> None:
    await ok(
        await s.stock.post(
            "/api/v1/outlets",
            json={
                "id": oid,
                "name": oid,
                "community": community,
                "region": "r1",
                "lat": lat,
                "lon": lon,
            },
        )
    )


async def stock_in(
    s: Stack, oid: str, sku: str, qty: int, reorder_point: int, *, auto_restock: bool = True
) -> None:
    await ok(
        await s.stock.put(
            f"/api/v1/outlets/{oid}/stock/{sku}/settings",
            json={"reorder_point": reorder_point, "maximum": 1000, "auto_restock": auto_restock},
        )
    )
    if qty:
        await ok(
            await s.stock.post(
                f"/api/v1/outlets/{oid}/receipts",
                json={
                    "idempotency_key": uid("r"),
                    "sku": sku,
                    "quantity": qty,
                    "source": "distribution_center",
                },
            )
        )


async def level(s: Stack, oid: str, sku: str) -> dict[str, Any]:
    return await ok(await s.stock.get(f"/api/v1/outlets/{oid}/stock/{sku}"))


async def transfer_knows(s: Stack, sql: str, **params: Any) -> None:
    import sqlalchemy as sa

    async def check() -> bool:
        async with s.transfer_app.state.runtime.engine.connect() as conn:
            return bool(await conn.scalar(sa.text(sql), params))

    await wait_until(check, timeout=30, what=sql)


async def offers_settled(s: Stack, sku: str, *suppliers: str) -> None:
    """Transfer's active offers of `sku` are exactly those of `suppliers` (the probe offer
    `product()` publishes and withdraws may be applied after the real ones)."""
    import sqlalchemy as sa

    async def check() -> bool:
        async with s.transfer_app.state.runtime.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT supplier_id FROM offers_view WHERE sku = :k AND status = 'active'"),
                {"k": sku},
            )
            return sorted(r[0] for r in rows) == sorted(suppliers)

    await wait_until(check, timeout=30, what=f"transfer's offers of {sku}")


async def request(s: Stack, oid: str, sku: str, qty: int) -> str:
    body = await ok(
        await s.transfer.post(
            "/api/v1/restock-requests", json={"outlet_id": oid, "sku": sku, "quantity": qty}
        ),
        202,
    )
    return str(body["id"])


async def until(
    s: Stack, rid: str, predicate: Any, what: str, timeout: float = 30
) -> dict[str, Any]:
    async def check() -> Any:
        body = await ok(await s.transfer.get(f"/api/v1/restock-requests/{rid}"))
        return body if predicate(body) else None

    result: dict[str, Any] = await wait_until(check, timeout=timeout, what=what)
    return result


def states(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(leg["source_id"], leg["state"]) for leg in body["legs"]]


async def story(bootstrap: str, rid: str) -> list[dict[str, Any]]:
    """Every event and command of the request's flow, on every topic, in time order."""
    out: list[dict[str, Any]] = []
    for topic in (TRANSFER_EVENTS, STOCK_COMMANDS, STOCK_EVENTS, SUPPLIER_EVENTS):
        for m in await read_all(bootstrap, topic, expect=10**9, timeout=1.5):
            env = json.loads(m.value)
            if env.get("correlation_id") == rid:
                out.append(env)
    out.sort(key=lambda e: str(e["occurred_at"]))
    return out


def is_subsequence(wanted: list[str], got: list[str]) -> bool:
    it = iter(got)
    return all(any(g == w for g in it) for w in wanted)


async def test_peer_with_surplus_reserves_dispatches_and_requester_receives(
    tmp_path: Any, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    dest, donor, far, sku = uid("o"), uid("o"), uid("o"), uid("sku")
    async with stack(tmp_path, bs) as s:
        await outlet(s, dest, "c1", -6.20, 106.80)
        await outlet(s, donor, "c1", -6.21, 106.81)
        await outlet(s, far, "c2", -6.90, 107.60)
        # dest is short (2, reorder point 5): its stock.low would open an auto-restock
        # request of its own; this test follows the one it asks for.
        await stock_in(s, dest, sku, 2, 5, auto_restock=False)
        await stock_in(s, donor, sku, 100, 10)
        await stock_in(s, far, sku, 100, 10)
        await transfer_knows(
            s, "SELECT count(*) = 2 FROM stock_view WHERE sku = :k AND available = 100", k=sku
        )
        await transfer_knows(
            s,
            "SELECT count(*) = 3 FROM outlets_view WHERE outlet_id IN (:a, :b, :c)",
            a=dest,
            b=donor,
            c=far,
        )

        rid = await request(s, dest, sku, 30)
        body = await until(s, rid, lambda b: states(b) == [(donor, "reserved")], "reserved")
        leg_id = body["legs"][0]["id"]
        assert (await level(s, donor, sku))["reserved"] == 30
        await ok(await s.transfer.post(f"/api/v1/transfers/{leg_id}/dispatch"), 202)
        await until(s, rid, lambda b: states(b) == [(donor, "dispatched")], "dispatched")
        await ok(
            await s.transfer.post(f"/api/v1/transfers/{leg_id}/receive", json={"quantity": 30}), 202
        )
        body = await until(s, rid, lambda b: b["status"] == "fulfilled", "fulfilled")
        assert body["received"] == 30

        donor_level, dest_level = await level(s, donor, sku), await level(s, dest, sku)
        assert (donor_level["on_hand"], donor_level["reserved"]) == (70, 0)
        assert (dest_level["on_hand"], dest_level["reserved"]) == (32, 0)

        types = [e["type"] for e in await story(bs, rid)]
        assert is_subsequence(
            [
                "transfer.request_opened",
                "transfer.request_matched",
                "transfer.leg_proposed",
                "stock.reserve",
                "stock.reserved",
                "transfer.leg_reserved",
                "stock.dispatch",
                "stock.dispatched",
                "transfer.leg_dispatched",
                "stock.receive",
                "stock.received",
                "transfer.leg_received",
                "transfer.request_fulfilled",
            ],
            types,
        ), types


async def product(s: Stack, sku: str) -> None:
    await ok(
        await s.catalog.post("/api/v1/products", json={"sku": sku, "name": sku, "unit": "pcs"}),
        201,
    )

    async def supplier_knows() -> bool:
        r = await s.supplier.post(
            "/api/v1/suppliers", json={"name": "probe", "kind": "small_producer"}
        )
        probe = r.json()["id"]
        r = await s.supplier.post(
            f"/api/v1/suppliers/{probe}/offers",
            json={"sku": sku, "quantity": 1, "unit_price": 10**9, "lead_time_hours": 8000},
        )
        if r.status_code == 201:
            await s.supplier.post(f"/api/v1/suppliers/{probe}/offers/{r.json()['id']}/withdraw")
        return r.status_code == 201

    await wait_until(supplier_knows, timeout=90, what="supplier knows the product")


async def register_supplier(s: Stack, name: str, sku: str, price: int, lead_h: int) -> str:
    sup = await ok(
        await s.supplier.post(
            "/api/v1/suppliers", json={"name": name, "kind": "small_producer", "community": "c1"}
        ),
        201,
    )
    await ok(
        await s.supplier.post(
            f"/api/v1/suppliers/{sup['id']}/offers",
            json={"sku": sku, "quantity": 100, "unit_price": price, "lead_time_hours": lead_h},
        ),
        201,
    )
    return str(sup["id"])


async def assignment(s: Stack, supplier_id: str, leg_id: str) -> None:
    async def there() -> bool:
        r = await s.supplier.get(f"/api/v1/suppliers/{supplier_id}/assignments/{leg_id}")
        return r.status_code == 200

    await wait_until(there, timeout=90, what="assignment in the supplier inbox")


async def test_no_peer_surplus_supplier_accepts_ships_and_outlet_receives(
    tmp_path: Any, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    dest, dry, sku = uid("o"), uid("o"), uid("sku")
    async with stack(tmp_path, bs) as s:
        await outlet(s, dest, "c1", -6.2, 106.8)
        await outlet(s, dry, "c1", -6.2, 106.8)
        # At its reorder point: no surplus. Its own auto-restock is off, or the request
        # stock.low opens for it would race dest's for the one offer.
        await stock_in(s, dry, sku, 10, 10, auto_restock=False)
        await product(s, sku)
        sup = await register_supplier(s, "Bu Sari", sku, 900, 12)
        await offers_settled(s, sku, sup)
        await transfer_knows(s, "SELECT count(*) FROM stock_view WHERE sku = :k", k=sku)

        rid = await request(s, dest, sku, 12)
        body = await until(s, rid, lambda b: bool(b["legs"]), "a leg")
        assert states(body) == [(sup, "proposed")]
        leg_id = body["legs"][0]["id"]
        considered = {c["source_id"]: c for c in body["explanation"][0]["candidates"]}
        assert considered[dry]["excluded"] == "at_or_below_reorder_point"
        await assignment(s, sup, leg_id)
        await ok(await s.supplier.post(f"/api/v1/suppliers/{sup}/assignments/{leg_id}/accept"))
        await until(s, rid, lambda b: states(b) == [(sup, "accepted")], "accepted")
        await ok(
            await s.supplier.post(
                f"/api/v1/suppliers/{sup}/assignments/{leg_id}/ship", json={"quantity": 12}
            )
        )
        await until(s, rid, lambda b: states(b) == [(sup, "shipped")], "shipped")
        await ok(
            await s.transfer.post(f"/api/v1/transfers/{leg_id}/receive", json={"quantity": 12}), 202
        )
        await until(s, rid, lambda b: b["status"] == "fulfilled", "fulfilled")
        assert (await level(s, dest, sku))["on_hand"] == 12
        types = [e["type"] for e in await story(bs, rid)]
        assert is_subsequence(
            [
                "transfer.request_opened",
                "transfer.leg_assigned",
                "supplier.assignment_accepted",
                "transfer.leg_accepted",
                "supplier.assignment_shipped",
                "transfer.leg_shipped",
                "stock.receive",
                "stock.received",
                "transfer.leg_received",
                "transfer.request_fulfilled",
            ],
            types,
        ), types


async def test_decline_rematches_silence_times_out_and_expiry_reserves_nothing(
    tmp_path: Any, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    dest, donor, sku, sku2 = uid("o"), uid("o"), uid("sku"), uid("sku")
    async with stack(tmp_path, bs, accept_timeout_s=3.0, request_ttl_s=12.0) as s:
        await outlet(s, dest, "c1", -6.2, 106.8)
        await outlet(s, donor, "c1", -6.21, 106.81)
        await product(s, sku)
        cheap = await register_supplier(s, "Cheap", sku, 800, 12)
        dear = await register_supplier(s, "Dear", sku, 1500, 12)
        await stock_in(s, donor, sku2, 50, 5)
        await offers_settled(s, sku, cheap, dear)
        await transfer_knows(s, "SELECT count(*) FROM stock_view WHERE sku = :k", k=sku2)
        await transfer_knows(s, "SELECT count(*) FROM outlets_view WHERE outlet_id = :o", o=donor)

        # a decline is re-matched to the next best source; its silence times out
        rid = await request(s, dest, sku, 10)
        body = await until(s, rid, lambda b: bool(b["legs"]), "a leg")
        assert states(body) == [(cheap, "proposed")]
        first = body["legs"][0]["id"]
        await assignment(s, cheap, first)
        await ok(
            await s.supplier.post(
                f"/api/v1/suppliers/{cheap}/assignments/{first}/decline",
                json={"reason": "sold out"},
            )
        )
        body = await until(
            s, rid, lambda b: states(b) == [(cheap, "declined"), (dear, "proposed")], "re-matched"
        )
        body = await until(
            s,
            rid,
            lambda b: states(b) == [(cheap, "declined"), (dear, "timed_out")],
            "timed out",
            timeout=20,
        )
        assert sorted(body["excluded_sources"]) == sorted([f"supplier:{cheap}", f"supplier:{dear}"])

        # an expired request leaves 0 units reserved anywhere
        rid2 = await request(s, dest, sku2, 20)
        await until(s, rid2, lambda b: states(b) == [(donor, "reserved")], "reserved")
        assert (await level(s, donor, sku2))["reserved"] == 20
        body = await until(s, rid2, lambda b: b["status"] == "expired", "expired", timeout=30)
        assert states(body) == [(donor, "cancelled")]

        async def nothing_reserved() -> bool:
            return bool((await level(s, donor, sku2))["reserved"] == 0)

        await wait_until(nothing_reserved, timeout=20, what="reservation released")
        assert (await level(s, donor, sku2))["on_hand"] == 50
        await asyncio.sleep(0)
