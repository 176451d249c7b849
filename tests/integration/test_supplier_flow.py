"""The supplier service with the catalog, on a broker of its own: the catalog projection,
offers, the assignment inbox, signed webhooks with retries, and the events it publishes."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_catalog.config import CatalogSettings
from jejaring_catalog.entrypoints.app import create_app as create_catalog
from jejaring_shared.contracts import Envelope
from jejaring_shared.contracts.transfer import LegAssigned, LegCancelled, LegExpired
from jejaring_shared.settings import KafkaSettings
from jejaring_supplier.config import SupplierSettings
from jejaring_supplier.domain import webhooks
from jejaring_supplier.entrypoints.app import create_app as create_supplier
from support.kafka_io import assert_matches_asyncapi, read_all, send_raw
from support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-for-hmac-signing"


def kafka(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0)


def supplier_app(
    db_url: str, bootstrap: str, *, allow_private: bool = True, **extra: Any
) -> FastAPI:
    """`allow_private`: the test's webhook receiver listens on this machine. `extra`:
    other settings, or these overridden."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "kafka": kafka(bootstrap),
        "relay_idle_poll_s": 0.1,
        "webhook_backoff_base_s": 0.3,
        "webhook_poll_s": 0.05,
        "webhook_timeout_s": 3.0,
        "webhook_allow_private": allow_private,
    }
    return create_supplier(SupplierSettings(**(values | extra)))


def catalog_app(db_url: str, bootstrap: str) -> FastAPI:
    return create_catalog(
        CatalogSettings(database_url=db_url, kafka=kafka(bootstrap), relay_idle_poll_s=0.1)
    )


@asynccontextmanager
async def running(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=90, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            yield client


class Receiver:
    """A local HTTP server that fails the first `fail_first` tries of each delivery (500)."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        delivery = headers.get(webhooks.DELIVERY_HEADER.lower())
        tries = sum(
            1 for h, _b, _s in self.requests if h.get(webhooks.DELIVERY_HEADER.lower()) == delivery
        )
        status = 500 if tries < self.fail_first else 200
        self.requests.append((headers, body, status))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"down"})


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(receiver, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110  (uvicorn offers no event to wait on)
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}/hooks/jejaring"
    finally:
        server.should_exit = True
        await task


def error_of(resp: httpx.Response) -> tuple[int, str, str | None]:
    err = resp.json()["error"]
    return resp.status_code, err["code"], err["field"]


def leg_event(leg_id: str, supplier_id: str, sku: str, **extra: Any) -> Envelope:
    now = datetime.now(UTC)
    payload = LegAssigned(
        leg_id=leg_id,
        request_id=f"req-{leg_id}",
        supplier_id=supplier_id,
        outlet_id="outlet-7",
        sku=sku,
        quantity=extra.pop("quantity", 24),
        unit_price=extra.pop("unit_price", 15_000),
        accept_by=now + timedelta(hours=2),
        ship_by=now + timedelta(days=1),
    )
    return Envelope(
        type="transfer.leg_assigned",
        source="transfer",
        key=payload.request_id,
        correlation_id=payload.request_id,
        payload=payload.model_dump(mode="json"),
    )


async def projection_status(app: FastAPI, sku: str) -> str | None:
    async with app.state.runtime.engine.connect() as conn:
        status: str | None = (
            await conn.execute(
                sa.text("SELECT status FROM catalog_products WHERE sku = :s"), {"s": sku}
            )
        ).scalar()
        return status


async def count(app: FastAPI, table: str) -> int:
    async with app.state.runtime.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_supplier_offers_assignments_webhooks_and_events(
    db_url: str, private_broker: Any, tmp_path: Path
) -> None:
    bootstrap = private_broker.bootstrap_servers
    catalog = catalog_app(f"sqlite+aiosqlite:///{tmp_path}/catalog.db", bootstrap)
    supplier = supplier_app(db_url, bootstrap)
    receiver = Receiver(fail_first=2)
    async with (
        serving(receiver) as hook_url,
        running(catalog, "catalog") as cat,
        running(supplier, "supplier") as sup,
    ):
        await cat.post("/api/v1/clusters", json={"code": "food", "name": "Food"})
        for sku in ("KERIPIK", "SAMBAL", "OLD"):
            body = {"sku": sku, "name": f"{sku} UMKM", "unit": "pack", "cluster": "food"}
            assert (await cat.post("/api/v1/products", json=body)).status_code == 201
        assert (await cat.post("/api/v1/products/OLD/retire")).status_code == 200

        reg = await sup.post(
            "/api/v1/suppliers",
            json={
                "name": "Bu Sari Snacks",
                "kind": "small_producer",
                "community": "212 Mart Bogor",
                "regions": ["bogor"],
                "clusters": ["food"],
                "contact": {"name": "Sari", "phone": "+62 812 0000 1111"},
                "webhook_url": hook_url,
                "webhook_secret": SECRET,
            },
        )
        assert reg.status_code == 201, reg.text
        sid = reg.json()["id"]
        assert reg.json()["webhook_secret_set"] is True and "webhook_secret" not in reg.json()
        bad_reg = await sup.post("/api/v1/suppliers", json={"name": "X", "kind": "big_corp"})
        assert error_of(bad_reg)[:2] == (422, "invalid")
        forged = await sup.post(
            "/api/v1/suppliers", json={"id": "sup_me", "name": "X", "kind": "small_producer"}
        )
        assert error_of(forged) == (422, "unknown_field", "id")
        # PostgreSQL stores no NUL in text: refused on the field, not failed as an outage.
        nul = await sup.post(
            "/api/v1/suppliers", json={"name": "X\u0000", "kind": "small_producer"}
        )
        assert error_of(nul) == (422, "invalid", "name")
        assert (await sup.get("/api/v1/suppliers/sup_x%00")).status_code == 400

        async def projected() -> bool:
            # Each product is its own key, so its own partition: no order between them.
            return await projection_status(supplier, "OLD") == "retired" and all(
                [await projection_status(supplier, s) == "active" for s in ("KERIPIK", "SAMBAL")]
            )

        await wait_until(projected, what="the catalog projection")

        # Offers: an active product only; bad input changes nothing.
        soon = (datetime.now(UTC) + timedelta(days=7)).isoformat()
        offer = {
            "sku": "KERIPIK",
            "quantity": 500,
            "unit_price": 12_500,
            "lead_time_hours": 24,
            "min_order": 10,
            "valid_until": soon,
        }
        made = await sup.post(f"/api/v1/suppliers/{sid}/offers", json=offer)
        assert made.status_code == 201, made.text
        offer_id = made.json()["id"]
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        refusals = [
            ({**offer, "sku": "OLD"}, (422, "product_retired", "sku")),
            ({**offer, "sku": "NOPE"}, (422, "unknown_sku", "sku")),
            ({**offer, "unit_price": -1}, (422, "too_small", "unit_price")),
            ({**offer, "quantity": -5}, (422, "too_small", "quantity")),
            ({**offer, "valid_until": past}, (422, "in_the_past", "valid_until")),
            ({**offer, "status": "active"}, (422, "unknown_field", "status")),
            ({**offer, "supplier_id": "other"}, (422, "unknown_field", "supplier_id")),
            ({**offer, "sku": "K" * 65}, (422, "too_long", "sku")),
            ({**offer, "min_order": 501}, (422, "too_large", "min_order")),
            (
                {**offer, "valid_until": "0001-01-01T00:00:00+01:00"},
                (422, "invalid", "valid_until"),
            ),
        ]
        for bad_offer, expected in refusals:
            got = await sup.post(f"/api/v1/suppliers/{sid}/offers", json=bad_offer)
            assert error_of(got) == expected, bad_offer
        assert await count(supplier, "offers") == 1
        unknown = await sup.post("/api/v1/suppliers/sup_nobody/offers", json=offer)
        assert error_of(unknown) == (404, "supplier_not_found", "supplier_id")

        # Two legs assigned by transfer; the first also arrives twice (redelivery).
        leg1 = leg_event("leg-1", sid, "KERIPIK", quantity=24, unit_price=12_500)
        leg2 = leg_event("leg-2", sid, "SAMBAL", quantity=10, unit_price=20_000)
        leg1_again = leg1.model_copy(update={"id": uuid.uuid4()})
        await send_raw(
            bootstrap,
            "transfer.events",
            [(e.key.encode(), e.to_bytes()) for e in (leg1, leg2, leg1_again)],
        )

        async def inbox() -> list[Any]:
            items = (await sup.get(f"/api/v1/suppliers/{sid}/assignments")).json()["items"]
            return items if len(items) == 2 else []

        items = await wait_until(inbox, what="two assignments in the inbox")
        assert {i["leg_id"]: i["status"] for i in items} == {
            "leg-1": "assigned",
            "leg-2": "assigned",
        }

        # The webhook: two failures, then delivered, every request validly signed.
        async def delivered() -> list[Any]:
            page = (await sup.get(f"/api/v1/suppliers/{sid}/webhook-deliveries")).json()
            done = [d for d in page["items"] if d["status"] == "delivered"]
            return page["items"] if len(done) == 2 else []

        deliveries = await wait_until(delivered, what="both webhooks delivered")
        by_leg: dict[str, list[tuple[dict[str, str], bytes, int]]] = {}
        for headers, raw, status in receiver.requests:
            sig_ok = webhooks.verify(
                SECRET,
                headers[webhooks.TIMESTAMP_HEADER.lower()],
                raw,
                headers[webhooks.SIGNATURE_HEADER.lower()],
            )
            assert sig_ok, headers
            assert not webhooks.verify(
                "wrong-secret-xxxxxxxx",
                headers[webhooks.TIMESTAMP_HEADER.lower()],
                raw,
                headers[webhooks.SIGNATURE_HEADER.lower()],
            )
            sent = json.loads(raw)
            assert sent["type"] == "assignment.created"
            assert headers[webhooks.DELIVERY_HEADER.lower()] == sent["id"]
            by_leg.setdefault(sent["assignment"]["leg_id"], []).append((headers, raw, status))
        assert len(receiver.requests) == 6  # each: 2 failures, then delivered; leg-1 once
        assert sorted(by_leg) == ["leg-1", "leg-2"]
        for delivery in deliveries:
            log = delivery["log"]
            assert delivery["attempts"] == 3
            assert [(a["attempt"], a["ok"], a["status_code"]) for a in log] == [
                (1, False, 500),
                (2, False, 500),
                (3, True, 200),
            ]
            assert log[0]["attempted_at"] < log[1]["attempted_at"] < log[2]["attempted_at"]
        for tries in by_leg.values():
            assert len({b for _h, b, _s in tries}) == 1  # the same bytes every try

        # Accept twice (a retried request): accepted once.
        base = f"/api/v1/suppliers/{sid}/assignments"
        a1 = await sup.post(f"{base}/leg-1/accept")
        a2 = await sup.post(f"{base}/leg-1/accept")
        assert a1.status_code == a2.status_code == 200
        assert a1.json()["status"] == a2.json()["status"] == "accepted"
        assert a1.json()["accepted_at"] == a2.json()["accepted_at"]

        # Decline the other; accepting it afterwards is refused; declining again is a no-op.
        d1 = await sup.post(f"{base}/leg-2/decline", json={"reason": "out of chillies"})
        assert d1.status_code == 200 and d1.json()["decline_reason"] == "out of chillies"
        late = await sup.post(f"{base}/leg-2/accept")
        assert error_of(late) == (409, "assignment_declined", "leg_id")
        assert "declined" in late.json()["error"]["message"]
        assert (
            await sup.post(f"{base}/leg-2/decline", json={"reason": "again"})
        ).status_code == 200
        assert error_of(await sup.post(f"{base}/leg-1/decline", json={"reason": "x"})) == (
            409,
            "assignment_accepted",
            "leg_id",
        )
        assert error_of(await sup.post(f"{base}/leg-2/ship", json={"quantity": 1})) == (
            409,
            "assignment_declined",
            "leg_id",
        )
        assert error_of(await sup.post(f"{base}/leg-1/ship", json={"quantity": 25})) == (
            422,
            "too_large",
            "quantity",
        )
        assert error_of(await sup.post(f"{base}/leg-1/ship", json={"quantity": 0})) == (
            422,
            "too_small",
            "quantity",
        )
        assert error_of(await sup.post(f"{base}/leg-1/decline", json={"reason": "r" * 501})) == (
            422,
            "too_long",
            "reason",
        )
        assert error_of(await sup.post("/api/v1/suppliers/sup_other/assignments/leg-1/accept")) == (
            404,
            "assignment_not_found",
            "leg_id",
        )

        shipped = await sup.post(f"{base}/leg-1/ship", json={"quantity": 20, "note": "4 broke"})
        assert shipped.status_code == 200 and shipped.json()["shipped_quantity"] == 20
        assert (await sup.post(f"{base}/leg-1/ship", json={"quantity": 20})).status_code == 200

        rel = (await sup.get(f"/api/v1/suppliers/{sid}/reliability")).json()
        assert (rel["assigned"], rel["shipped_on_time"], rel["declined"], rel["score"]) == (
            2,
            1,
            1,
            0.5,
        )
        period = datetime.now(UTC).strftime("%Y-%m")
        st = (await sup.get(f"/api/v1/suppliers/{sid}/settlements/{period}")).json()
        assert (st["legs"], st["quantity"], st["amount"]) == (1, 20, 20 * 12_500)
        assert (await sup.get(f"/api/v1/suppliers/{sid}/settlements/2026-13")).status_code == 422

        # Retiring a product in the catalog withdraws the offers for it.
        assert (await cat.post("/api/v1/products/KERIPIK/retire")).status_code == 200

        async def withdrawn() -> bool:
            page = (
                await sup.get(f"/api/v1/suppliers/{sid}/offers", params={"status": "all"})
            ).json()
            return bool(page["items"][0]["status"] == "withdrawn")

        await wait_until(withdrawn, what="the offer withdrawn")

        async def supplier_events() -> list[Any]:
            got = await read_all(bootstrap, "supplier.events", expect=10**9, timeout=2)
            return got if len(got) >= 6 else []

        sup_msgs = await wait_until(supplier_events, what="supplier events")
        cat_msgs = await read_all(bootstrap, "catalog.events", expect=6, timeout=30)

    sup_events = [assert_matches_asyncapi(m.value) for m in sup_msgs]
    assert Counter(e.type for e in sup_events) == {
        "supplier.registered": 1,
        "supplier.offer_published": 1,
        "supplier.assignment_accepted": 1,
        "supplier.assignment_declined": 1,
        "supplier.assignment_shipped": 1,
        "supplier.offer_withdrawn": 1,
    }
    assert all(e.key == sid for e in sup_events)
    accepted = next(e for e in sup_events if e.type == "supplier.assignment_accepted")
    assert accepted.payload == {"leg_id": "leg-1", "supplier_id": sid}
    assert accepted.correlation_id == "req-leg-1"
    cat_events = [assert_matches_asyncapi(m.value) for m in cat_msgs]
    assert Counter(e.type for e in cat_events) == {
        "catalog.product_created": 3,
        "catalog.product_retired": 2,
    }
    assert offer_id


async def test_pending_webhooks_survive_a_restart(private_broker: Any, tmp_path: Path) -> None:
    """A delivery that failed before the service stopped is sent after it starts again."""
    bootstrap = private_broker.bootstrap_servers
    db = f"sqlite+aiosqlite:///{tmp_path}/supplier.db"
    receiver = Receiver(fail_first=1)
    async with serving(receiver) as hook_url:
        app = supplier_app(db, bootstrap)
        async with running(app, "supplier") as sup:
            reg = await sup.post(
                "/api/v1/suppliers",
                json={
                    "name": "DC Cibinong",
                    "kind": "distribution_center",
                    "webhook_url": hook_url,
                    "webhook_secret": SECRET,
                },
            )
            sid = reg.json()["id"]
            leg = leg_event("leg-r", sid, "ANY")
            await send_raw(bootstrap, "transfer.events", [(leg.key.encode(), leg.to_bytes())])

            async def first_try() -> bool:
                return len(receiver.requests) >= 1

            await wait_until(first_try, what="the first attempt")
        # Stopped with the delivery pending; the second try happens after the restart.
        assert len(receiver.requests) == 1
        app2 = supplier_app(db, bootstrap)
        async with running(app2, "supplier") as sup2:

            async def delivered() -> list[Any]:
                items = (await sup2.get(f"/api/v1/suppliers/{sid}/webhook-deliveries")).json()[
                    "items"
                ]
                return items if items and items[0]["status"] == "delivered" else []

            items = await wait_until(delivered, what="delivery after restart")
    assert [a["status_code"] for a in items[0]["log"]] == [500, 200]


async def test_a_webhook_into_our_own_network_is_refused(db_url: str, private_broker: Any) -> None:
    """By default (production) a supplier cannot point its webhook at loopback, private or
    link-local addresses: the service would be made to call into the cooperative's
    network. Refused with 422 on the field; nothing is stored."""
    app = supplier_app(db_url, private_broker.bootstrap_servers, allow_private=False)
    async with running(app, "supplier") as sup:
        for url in (
            "http://127.0.0.1:8002/api/v1/outlets",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9/hook",
            "http://10.0.0.8/hook",
        ):
            resp = await sup.post(
                "/api/v1/suppliers",
                json={
                    "name": "Sneaky",
                    "kind": "small_producer",
                    "webhook_url": url,
                    "webhook_secret": SECRET,
                },
            )
            assert error_of(resp) == (422, "webhook_not_public", "webhook_url"), url
        listed = await sup.get("/api/v1/suppliers")
        assert listed.status_code == 200 and listed.json()["total"] == 0
        ok = await sup.post(
            "/api/v1/suppliers",
            json={
                "name": "Bu Sari Snacks",
                "kind": "small_producer",
                "webhook_url": "https://hooks.example.com/jejaring",
                "webhook_secret": SECRET,
            },
        )
        assert ok.status_code == 201, ok.text


def called_off(leg: Envelope, kind: type[LegCancelled] | type[LegExpired], reason: str) -> Envelope:
    """Transfer calling an assigned leg off, on the leg's key (its request), after it."""
    assigned = leg.payload
    payload = kind(
        leg_id=assigned["leg_id"],
        request_id=assigned["request_id"],
        source_kind="supplier",
        source_id=assigned["supplier_id"],
        outlet_id=assigned["outlet_id"],
        sku=assigned["sku"],
        quantity=assigned["quantity"],
        state="cancelled" if kind is LegCancelled else "timed_out",
        reason=reason,
    )
    return Envelope(
        type="transfer.leg_cancelled" if kind is LegCancelled else "transfer.leg_expired",
        source="transfer",
        key=leg.key,
        correlation_id=leg.correlation_id,
        payload=payload.model_dump(mode="json"),
    )


async def hooked_supplier(sup: httpx.AsyncClient, name: str, hook_url: str) -> str:
    """A small producer registered with a webhook to `hook_url`; its id."""
    reg = await sup.post(
        "/api/v1/suppliers",
        json={
            "name": name,
            "kind": "small_producer",
            "webhook_url": hook_url,
            "webhook_secret": SECRET,
        },
    )
    return str(reg.json()["id"])


async def assigned_then_called_off(bootstrap: str, sid: str, leg_id: str, sku: str) -> None:
    """Transfer assigning a leg of 5 to the supplier and cancelling it straight after."""
    leg = leg_event(leg_id, sid, sku, quantity=5)
    off = called_off(leg, LegCancelled, "no longer needed")
    await send_raw(
        bootstrap, "transfer.events", [(e.key.encode(), e.to_bytes()) for e in (leg, off)]
    )


async def test_a_leg_transfer_calls_off_is_closed_and_the_supplier_told(
    db_url: str, private_broker: Any
) -> None:
    """A request cancelled while its supplier leg waits, and a leg transfer timed out after
    the supplier accepted it (the accept arrived too late): both assignments close, the
    supplier is told by webhook, and neither can be accepted or shipped any more. A
    shipped assignment stays shipped: those goods are on their way."""
    bootstrap = private_broker.bootstrap_servers
    receiver = Receiver(fail_first=0)
    async with serving(receiver) as hook_url, running(supplier_app(db_url, bootstrap), "s") as sup:
        sid = await hooked_supplier(sup, "Pak Budi Tahu", hook_url)
        legs = {name: leg_event(name, sid, "TAHU", quantity=5) for name in ("c", "t", "s")}
        await send_raw(
            bootstrap, "transfer.events", [(e.key.encode(), e.to_bytes()) for e in legs.values()]
        )
        base = f"/api/v1/suppliers/{sid}/assignments"

        async def assigned() -> bool:
            items = (await sup.get(base)).json()["items"]
            return len(items) == 3

        await wait_until(assigned, what="three assignments")
        assert (await sup.post(f"{base}/t/accept")).status_code == 200
        assert (await sup.post(f"{base}/s/accept")).status_code == 200
        assert (await sup.post(f"{base}/s/ship", json={"quantity": 5})).status_code == 200
        await send_raw(
            bootstrap,
            "transfer.events",
            [
                (e.key.encode(), e.to_bytes())
                for e in (
                    called_off(legs["c"], LegCancelled, "no longer needed"),
                    called_off(legs["t"], LegExpired, "accept_timeout"),
                    called_off(legs["s"], LegCancelled, "no longer needed"),
                )
            ],
        )

        async def closed() -> dict[str, Any]:
            items = {a["leg_id"]: a for a in (await sup.get(base)).json()["items"]}
            done = items["c"]["status"] == items["t"]["status"] == "cancelled"
            return items if done else {}

        items = await wait_until(closed, what="both assignments called off")
        assert (items["c"]["cancel_reason"], items["t"]["cancel_reason"]) == (
            "no longer needed",
            "accept_timeout",
        )
        assert items["s"]["status"] == "shipped"
        for leg_id, action, body in (("c", "accept", None), ("t", "ship", {"quantity": 5})):
            refused = await sup.post(f"{base}/{leg_id}/{action}", json=body)
            assert error_of(refused) == (409, "assignment_cancelled", "leg_id")

        async def told() -> list[str]:
            sent = [json.loads(raw) for _h, raw, _s in receiver.requests]
            cancelled = [
                s["assignment"]["leg_id"] for s in sent if s["type"] == "assignment.cancelled"
            ]
            return sorted(cancelled) if len(cancelled) == 2 else []

        assert await wait_until(told, what="the supplier told of both") == ["c", "t"]
        # Neither called-off leg counts against the supplier: both were within their
        # deadlines (t was accepted in time; transfer timed it out just after).
        rel = (await sup.get(f"/api/v1/suppliers/{sid}/reliability")).json()
        assert (rel["assigned"], rel["shipped"]) == (1, 1)


async def test_a_legs_webhooks_arrive_in_order_though_the_first_is_retried(
    db_url: str, private_broker: Any
) -> None:
    """A leg assigned and called off at once, to a receiver failing each delivery's first
    two tries: the cancellation is not sent until the assignment it cancels got through
    (else the supplier's system hears of a cancellation for an assignment it never had,
    then takes the assignment as live)."""
    bootstrap = private_broker.bootstrap_servers
    receiver = Receiver(fail_first=2)
    async with serving(receiver) as hook_url, running(supplier_app(db_url, bootstrap), "s") as sup:
        sid = await hooked_supplier(sup, "Bu Rina Kerupuk", hook_url)
        await assigned_then_called_off(bootstrap, sid, "leg-o", "KERUPUK")

        async def both_delivered() -> list[Any]:
            items = (await sup.get(f"/api/v1/suppliers/{sid}/webhook-deliveries")).json()["items"]
            done = len(items) == 2 and all(i["status"] == "delivered" for i in items)
            return items if done else []

        await wait_until(both_delivered, what="both deliveries made")
    tried = [(json.loads(raw)["type"], status) for _h, raw, status in receiver.requests]
    assert tried == [
        ("assignment.created", 500),
        ("assignment.created", 500),
        ("assignment.created", 200),
        ("assignment.cancelled", 500),
        ("assignment.cancelled", 500),
        ("assignment.cancelled", 200),
    ]


async def test_an_offer_past_its_valid_until_shows_and_filters_as_expired(
    db_url: str, private_broker: Any
) -> None:
    """Transfer stops matching an offer at its valid_until; the supplier's own list said
    `active` for it still, for good."""
    app = supplier_app(db_url, private_broker.bootstrap_servers)
    async with running(app, "s") as sup:
        async with app.state.runtime.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO catalog_products (sku, name, unit, status, updated_at) "
                    "VALUES ('TEMPE', 'Tempe', 'pcs', 'active', :now)"
                ),
                {"now": datetime.now(UTC)},
            )
        sid = (
            await sup.post("/api/v1/suppliers", json={"name": "Pak Tono", "kind": "small_producer"})
        ).json()["id"]
        base = f"/api/v1/suppliers/{sid}/offers"
        offer = {"sku": "TEMPE", "quantity": 40, "unit_price": 5_000, "lead_time_hours": 12}
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        short = (await sup.post(base, json={**offer, "valid_until": soon})).json()
        lasting = (await sup.post(base, json=offer)).json()
        assert short["status"] == lasting["status"] == "active"
        await asyncio.sleep(1.2)

        async def listed(status: str) -> list[tuple[str, str]]:
            items = (await sup.get(base, params={"status": status})).json()["items"]
            return sorted((i["id"], i["status"]) for i in items)

        assert await listed("active") == [(lasting["id"], "active")]
        assert await listed("expired") == [(short["id"], "expired")]
        assert await listed("all") == sorted([(lasting["id"], "active"), (short["id"], "expired")])
        withdrawn = await sup.post(f"{base}/{short['id']}/withdraw")
        assert withdrawn.json()["status"] == "withdrawn"
        assert await listed("expired") == []
        # Withdrawn twice at once (a retried click; on PostgreSQL truly at once): announced
        # once. Both read it active before, and each announced it.
        both = await asyncio.gather(
            sup.post(f"{base}/{lasting['id']}/withdraw"),
            sup.post(f"{base}/{lasting['id']}/withdraw"),
        )
        assert [r.json()["status"] for r in both] == ["withdrawn", "withdrawn"]
        async with app.state.runtime.engine.connect() as conn:
            announced = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM outbox WHERE type = 'supplier.offer_withdrawn' "
                    "AND body LIKE :id"
                ),
                {"id": f"%{lasting['id']}%"},
            )
        assert announced == 1


async def test_a_failed_delivery_can_be_resent_unless_later_news_went_out(
    db_url: str, private_broker: Any
) -> None:
    """A receiver down past the retries: its deliveries end `failed`, for good before. The
    supplier (or an admin) can now send one again, the same delivery; not an
    `assignment.created` whose `assignment.cancelled` came after it (that order would read
    as a live assignment)."""
    bootstrap = private_broker.bootstrap_servers
    receiver = Receiver(fail_first=2)
    app = supplier_app(db_url, bootstrap, webhook_backoff_base_s=0.1, webhook_max_attempts=2)
    async with serving(receiver) as hook_url, running(app, "s") as sup:
        sid = await hooked_supplier(sup, "Bu Wati Emping", hook_url)
        await assigned_then_called_off(bootstrap, sid, "leg-f", "EMPING")
        base = f"/api/v1/suppliers/{sid}/webhook-deliveries"

        async def statuses() -> dict[str, str]:
            items = (await sup.get(base)).json()["items"]
            by_event = {i["event"]: i["status"] for i in items}
            return by_event if set(by_event.values()) == {"failed"} and len(items) == 2 else {}

        await wait_until(statuses, what="both deliveries failed")
        items = {i["event"]: i for i in (await sup.get(base)).json()["items"]}
        created, cancelled = items["assignment.created"], items["assignment.cancelled"]
        refused = await sup.post(f"{base}/{created['id']}/resend")
        assert error_of(refused) == (409, "delivery_superseded", "delivery_id")
        resent = await sup.post(f"{base}/{cancelled['id']}/resend")
        assert (resent.status_code, resent.json()["status"]) == (200, "pending")

        async def delivered() -> bool:
            items = {i["event"]: i for i in (await sup.get(base)).json()["items"]}
            return bool(items["assignment.cancelled"]["status"] == "delivered")

        await wait_until(delivered, what="the resent delivery made")
        # The same delivery: its id, body and signature as on the first try.
        tries = [
            (h, raw)
            for h, raw, _s in receiver.requests
            if h[webhooks.DELIVERY_HEADER.lower()] == cancelled["id"]
        ]
        assert len(tries) == 3 and len({raw for _h, raw in tries}) == 1
        again = await sup.post(f"{base}/{cancelled['id']}/resend")
        assert error_of(again) == (409, "delivery_not_failed", "delivery_id")
        unknown = await sup.post(f"{base}/nope/resend")
        assert error_of(unknown) == (404, "delivery_not_found", "delivery_id")
