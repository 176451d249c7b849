"""The transfer service alone on a real Kafka broker.

Stock, supplier and catalog events are another service's events: here they are produced
with a plain Kafka producer (real envelopes), and the commands transfer sends to stock are
read back from stock.commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from jejaring_shared.contracts import utcnow
from jejaring_shared.contracts.catalog import ProductCreated
from jejaring_shared.contracts.stock import (
    ReservationRejected,
    StockDispatched,
    StockLow,
    StockReceived,
    StockReserved,
)
from jejaring_shared.contracts.supplier import (
    AssignmentAccepted,
    AssignmentDeclined,
    AssignmentShipped,
    OfferPublished,
    SupplierRegistered,
)
from support.transfer import (
    commands,
    emit,
    get,
    level,
    outlet,
    outlets_known,
    projected,
    running,
    scalar,
    settings_for,
    transfer_events,
    uid,
    until_state,
)
from support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def leg_states(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(leg["source_id"], leg["state"]) for leg in body["legs"]]


# -- tests ----------------------------------------------------------------------------------


async def test_peer_leg_reserve_dispatch_receive_one_story(
    db_url: str, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    dest, near, far, sku = uid("o"), uid("o"), uid("o"), uid("sku")
    async with running(settings_for(db_url, bs)) as (app, client):
        await emit(
            bs,
            outlet(dest, "c1", -6.20, 106.80),
            outlet(near, "c1", -6.21, 106.81),
            outlet(far, "c2", -6.90, 107.60),
            level(near, sku, 50, 10),
            level(far, sku, 200, 10),
            (
                ProductCreated(sku=sku, name="Beras", unit="kg", case_pack=5, min_transfer_qty=5),
                sku,
                None,
            ),
        )
        await projected(app, "stock_view", 2, "sku", sku)
        await projected(app, "products_view", 1, "sku", sku)
        await outlets_known(app, dest, near, far)

        resp = await client.post(
            "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 18}
        )
        assert resp.status_code == 202, resp.text
        rid = resp.json()["id"]
        assert resp.json()["quantity"] == 20  # four cases of five

        [reserve] = await commands(bs, rid, 1)
        assert reserve["type"] == "stock.reserve"
        assert reserve["key"] == f"{near}:{sku}"
        assert reserve["payload"]["outlet_id"] == near
        assert reserve["payload"]["quantity"] == 20
        leg_id = reserve["payload"]["leg_id"]

        body = await get(client, rid)
        assert leg_states(body) == [(near, "proposed")]
        [explained] = body["explanation"]
        assert explained["strategy"] == "single_source"
        considered = {c["source_id"]: c for c in explained["candidates"]}
        assert considered[near]["chosen"] and not considered[far]["chosen"]
        assert set(considered[near]["terms"]) == {
            "transport",
            "price",
            "lead_time",
            "risk",
            "total",
        }
        assert considered[near]["terms"]["transport"] < considered[far]["terms"]["transport"]

        resp = await client.post(f"/api/v1/transfers/{leg_id}/dispatch")
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "leg_not_reserved"

        await emit(
            bs,
            (
                StockReserved(outlet_id=near, sku=sku, leg_id=leg_id, quantity=20),
                f"{near}:{sku}",
                rid,
            ),
        )
        await until_state(client, rid, lambda b: b["legs"][0]["state"] == "reserved", "reserved")
        resp = await client.post(f"/api/v1/transfers/{leg_id}/dispatch")
        assert resp.status_code == 202, resp.text
        dispatch = (await commands(bs, rid, 2))[1]
        assert dispatch["type"] == "stock.dispatch"
        assert dispatch["payload"] == {"outlet_id": near, "sku": sku, "leg_id": leg_id}

        await emit(
            bs,
            (
                StockDispatched(outlet_id=near, sku=sku, leg_id=leg_id, quantity=20),
                f"{near}:{sku}",
                rid,
            ),
        )
        await until_state(
            client, rid, lambda b: b["legs"][0]["state"] == "dispatched", "dispatched"
        )

        resp = await client.post(f"/api/v1/transfers/{leg_id}/receive", json={"quantity": 18})
        assert resp.status_code == 422
        assert resp.json()["error"]["field"] == "reason"
        resp = await client.post(
            f"/api/v1/transfers/{leg_id}/receive", json={"quantity": 18, "reason": "2 damaged"}
        )
        assert resp.status_code == 202, resp.text
        receive = (await commands(bs, rid, 3))[2]
        assert receive["type"] == "stock.receive"
        assert receive["key"] == f"{dest}:{sku}"
        assert receive["payload"]["quantity"] == 18
        assert receive["payload"]["sent_quantity"] == 20
        assert receive["payload"]["reason"] == "2 damaged"

        await emit(
            bs,
            (
                StockReceived(
                    outlet_id=dest, sku=sku, leg_id=leg_id, quantity=18, reason="2 damaged"
                ),
                f"{dest}:{sku}",
                rid,
            ),
        )
        body = await until_state(
            client, rid, lambda b: b["status"] == "partially_fulfilled", "closed"
        )
        assert body["received"] == 18
        states = [
            h["to"] for h in body["history"] if h["leg_id"] == leg_id and h["from"] != h["to"]
        ]
        assert states == ["proposed", "reserved", "dispatched", "received"]

        story = await transfer_events(bs, rid, 7)
        types = [json.loads(m.value)["type"] for m in story]
        assert types == [
            "transfer.request_opened",
            "transfer.request_matched",
            "transfer.leg_proposed",
            "transfer.leg_reserved",
            "transfer.leg_dispatched",
            "transfer.leg_received",
            "transfer.request_partially_fulfilled",
        ]
        assert {json.loads(m.value)["correlation_id"] for m in story} == {rid}
        assert len({m.partition for m in story}) == 1  # one key, one partition, in order
        matched = json.loads(story[1].value)["payload"]
        assert matched["candidates"] and matched["legs"][0]["leg_id"] == leg_id

        kpis = (await client.get("/api/v1/kpis")).json()
        assert kpis["fill_rate"] == 0.9
        assert kpis["filled_units"]["peers"] == 18


async def test_rejection_rematches_to_the_next_source_and_merge(
    db_url: str, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    dest, first, second, sku = uid("o"), uid("o"), uid("o"), uid("sku")
    async with running(settings_for(db_url, bs)) as (app, client):
        await emit(
            bs,
            outlet(dest, "c1", -6.20, 106.80),
            outlet(first, "c1", -6.21, 106.81),
            outlet(second, "c2", -6.50, 107.00),
            level(first, sku, 40, 5),
            level(second, sku, 40, 5),
        )
        await projected(app, "stock_view", 2, "sku", sku)
        await outlets_known(app, dest, first, second)
        resp = await client.post(
            "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 10}
        )
        rid = resp.json()["id"]
        [reserve] = await commands(bs, rid, 1)
        assert reserve["payload"]["outlet_id"] == first
        await emit(
            bs,
            (
                ReservationRejected(
                    outlet_id=first,
                    sku=sku,
                    leg_id=reserve["payload"]["leg_id"],
                    quantity=10,
                    available=3,
                    reason="insufficient_stock",
                ),
                f"{first}:{sku}",
                rid,
            ),
        )
        again = (await commands(bs, rid, 2))[1]
        assert again["type"] == "stock.reserve"
        assert again["payload"]["outlet_id"] == second
        body = await get(client, rid)
        assert leg_states(body) == [(first, "rejected"), (second, "proposed")]
        assert body["excluded_sources"] == [f"outlet:{first}"]
        assert body["explanation"][-1]["attempt"] == 2

        # A second request for the same outlet and sku merges into the open one.
        resp = await client.post(
            "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 5}
        )
        assert resp.status_code == 202
        assert resp.json() == {"id": rid, "status": "matching", "quantity": 15, "merged": True}
        extra = (await commands(bs, rid, 3))[2]
        assert extra["payload"]["outlet_id"] == second
        assert extra["payload"]["quantity"] == 5
        count = await scalar(app, "SELECT count(*) FROM restock_requests")
        assert count == 1


async def test_api_validation_and_unknown_ids(db_url: str, private_broker: Any) -> None:
    bs = private_broker.bootstrap_servers
    async with running(settings_for(db_url, bs)) as (_app, client):
        resp = await client.post(
            "/api/v1/restock-requests", json={"outlet_id": "o1", "sku": "A", "quantity": 0}
        )
        assert resp.status_code == 422
        assert resp.json()["error"]["field"] == "quantity"
        resp = await client.post(
            "/api/v1/restock-requests", json={"outlet_id": "o1", "quantity": 1}
        )
        assert resp.json()["error"] == {
            "code": "required",
            "message": "Field required",
            "field": "sku",
        }
        past = (utcnow() - timedelta(hours=1)).isoformat()
        resp = await client.post(
            "/api/v1/restock-requests",
            json={"outlet_id": "o1", "sku": "A", "quantity": 1, "needed_by": past},
        )
        assert resp.status_code == 422
        assert resp.json()["error"]["field"] == "needed_by"
        # Reservations would be held until then; a date near year 9999 overflowed (500).
        for far in ((utcnow() + timedelta(days=91)).isoformat(), "9999-12-31T23:00:00+00:00"):
            resp = await client.post(
                "/api/v1/restock-requests",
                json={"outlet_id": "o1", "sku": "A", "quantity": 1, "needed_by": far},
            )
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["code"] == "too_far"
            assert resp.json()["error"]["field"] == "needed_by"
        # Before year 1 or past 9999 once in UTC: a 422 on the field, not a 500.
        for edge in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"):
            resp = await client.post(
                "/api/v1/restock-requests",
                json={"outlet_id": "o1", "sku": "A", "quantity": 1, "needed_by": edge},
            )
            assert (resp.status_code, resp.json()["error"]["field"]) == (422, "needed_by")
        for path in ("/api/v1/restock-requests/nope", "/api/v1/restock-requests/nope/cancel"):
            resp = await (client.get(path) if "cancel" not in path else client.post(path))
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "request_not_found"
        resp = await client.post("/api/v1/transfers/nope/dispatch")
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "leg_not_found"


async def test_supplier_decline_then_timeout_rematch(db_url: str, private_broker: Any) -> None:
    bs = private_broker.bootstrap_servers
    dest, dry, sku = uid("o"), uid("o"), uid("sku")
    cheap, dear = uid("s"), uid("s")
    settings = settings_for(db_url, bs, accept_timeout_s=2.0)
    async with running(settings) as (app, client):
        await emit(
            bs,
            outlet(dest, "c1", -6.2, 106.8),
            outlet(dry, "c1", -6.2, 106.8),
            level(dry, sku, 5, 5),  # at its reorder point: never a donor
            (SupplierRegistered(supplier_id=cheap, name="A", kind="small_producer"), cheap, None),
            (SupplierRegistered(supplier_id=dear, name="B", kind="small_producer"), dear, None),
            (
                OfferPublished(
                    offer_id=uid("of"),
                    supplier_id=cheap,
                    sku=sku,
                    quantity=100,
                    unit_price=900,
                    lead_time_hours=12,
                ),
                cheap,
                None,
            ),
            (
                OfferPublished(
                    offer_id=uid("of"),
                    supplier_id=dear,
                    sku=sku,
                    quantity=100,
                    unit_price=1500,
                    lead_time_hours=12,
                ),
                dear,
                None,
            ),
        )
        await projected(app, "offers_view", 2, "sku", sku)
        await projected(app, "stock_view", 1, "sku", sku)
        await outlets_known(app, dest, dry)
        resp = await client.post(
            "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 10}
        )
        rid = resp.json()["id"]
        body = await get(client, rid)
        [leg] = body["legs"]
        assert (leg["source_kind"], leg["source_id"], leg["state"]) == (
            "supplier",
            cheap,
            "proposed",
        )
        assert leg["accept_by"] is not None
        considered = {c["source_id"]: c for c in body["explanation"][0]["candidates"]}
        assert considered[dry]["excluded"] == "at_or_below_reorder_point"
        await emit(
            bs,
            (
                AssignmentDeclined(leg_id=leg["id"], supplier_id=cheap, reason="sold out"),
                cheap,
                rid,
            ),
        )
        body = await until_state(client, rid, lambda b: len(b["legs"]) == 2, "re-matched")
        assert leg_states(body) == [(cheap, "declined"), (dear, "proposed")]
        # dear stays silent past accept_by: timed out, nothing else to try, waits for a source
        body = await until_state(
            client, rid, lambda b: b["legs"][1]["state"] == "timed_out", "timed out", timeout=15
        )
        assert sorted(body["excluded_sources"]) == sorted([f"supplier:{cheap}", f"supplier:{dear}"])
        types = [json.loads(m.value)["type"] for m in await transfer_events(bs, rid, 8)]
        assert "transfer.leg_declined" in types and "transfer.leg_expired" in types
        assert types.count("transfer.leg_assigned") == 2


async def test_supplier_accepts_ships_and_outlet_receives(db_url: str, private_broker: Any) -> None:
    bs = private_broker.bootstrap_servers
    dest, sup, sku = uid("o"), uid("s"), uid("sku")
    async with running(settings_for(db_url, bs)) as (app, client):
        await emit(
            bs,
            outlet(dest, "c1", -6.2, 106.8),
            (SupplierRegistered(supplier_id=sup, name="A", kind="small_producer"), sup, None),
            (
                OfferPublished(
                    offer_id=uid("of"),
                    supplier_id=sup,
                    sku=sku,
                    quantity=100,
                    unit_price=900,
                    lead_time_hours=12,
                ),
                sup,
                None,
            ),
        )
        await projected(app, "offers_view", 1, "sku", sku)
        rid = (
            await client.post(
                "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 10}
            )
        ).json()["id"]
        leg_id = (await get(client, rid))["legs"][0]["id"]
        await emit(
            bs,
            (AssignmentAccepted(leg_id=leg_id, supplier_id=sup), sup, rid),
            (AssignmentShipped(leg_id=leg_id, supplier_id=sup, quantity=10), sup, rid),
        )
        await until_state(client, rid, lambda b: b["legs"][0]["state"] == "shipped", "shipped")
        resp = await client.post(f"/api/v1/transfers/{leg_id}/receive", json={"quantity": 10})
        assert resp.status_code == 202
        [receive] = await commands(bs, rid, 1)
        assert receive["type"] == "stock.receive"
        await emit(
            bs,
            (
                StockReceived(outlet_id=dest, sku=sku, leg_id=leg_id, quantity=10),
                f"{dest}:{sku}",
                rid,
            ),
        )
        body = await until_state(client, rid, lambda b: b["status"] == "fulfilled", "fulfilled")
        moves = [h["to"] for h in body["history"] if h["leg_id"] == leg_id and h["from"] != h["to"]]
        assert moves == ["proposed", "accepted", "shipped", "received"]
        kpis = (await client.get("/api/v1/kpis")).json()
        assert kpis["share"] == {"peers": 0.0, "suppliers": 1.0}
        assert kpis["time_to_fill_s"]["n"] == 1


async def test_expiry_and_cancel_release_every_reservation(
    db_url: str, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    dest, donor, sku, sku2 = uid("o"), uid("o"), uid("sku"), uid("sku")
    async with running(settings_for(db_url, bs, request_ttl_s=2.0)) as (app, client):
        await emit(
            bs,
            outlet(dest, "c1", -6.2, 106.8),
            outlet(donor, "c1", -6.2, 106.8),
            level(donor, sku, 100, 5),
            level(donor, sku2, 100, 5),
        )
        await projected(app, "stock_view", 2, "outlet_id", donor)
        await outlets_known(app, dest, donor)
        rid = (
            await client.post(
                "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 10}
            )
        ).json()["id"]
        [reserve] = await commands(bs, rid, 1)
        leg_id = reserve["payload"]["leg_id"]
        assert reserve["payload"]["expires_in_s"] >= 60
        await emit(
            bs,
            (
                StockReserved(outlet_id=donor, sku=sku, leg_id=leg_id, quantity=10),
                f"{donor}:{sku}",
                rid,
            ),
        )
        body = await until_state(client, rid, lambda b: b["status"] == "expired", "expired", 15)
        assert leg_states(body) == [(donor, "cancelled")]
        release = (await commands(bs, rid, 2))[1]
        assert release["type"] == "stock.release"
        assert release["payload"]["leg_id"] == leg_id

        rid2 = (
            await client.post(
                "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku2, "quantity": 10}
            )
        ).json()["id"]
        resp = await client.post(f"/api/v1/restock-requests/{rid2}/cancel")
        assert resp.json() == {"id": rid2, "status": "cancelled"}
        resp = await client.post(f"/api/v1/restock-requests/{rid2}/cancel")
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "request_closed"
        cmds = await commands(bs, rid2, 2)
        assert [c["type"] for c in cmds] == ["stock.reserve", "stock.release"]


async def test_a_remainder_no_leg_can_carry_closes_the_request_when_its_legs_are_done(
    db_url: str, private_broker: Any
) -> None:
    """Packs of 6, a minimum transfer of 12, a request of 18 and a donor that can give 12:
    the 6 left can never be sent by anyone. The request closed only at its expiry (up to
    91 days), holding the outlet's open request all that time."""
    bs = private_broker.bootstrap_servers
    dest, donor, sku = uid("o"), uid("o"), uid("sku")
    async with running(settings_for(db_url, bs)) as (app, client):
        await emit(
            bs,
            outlet(dest, "c1", -6.20, 106.80),
            outlet(donor, "c1", -6.21, 106.81),
            level(donor, sku, 17, 5),
            (
                ProductCreated(sku=sku, name="Teh", unit="box", case_pack=6, min_transfer_qty=12),
                sku,
                None,
            ),
        )
        await projected(app, "stock_view", 1, "sku", sku)
        await projected(app, "products_view", 1, "sku", sku)
        await outlets_known(app, dest, donor)
        resp = await client.post(
            "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 18}
        )
        rid = resp.json()["id"]
        [reserve] = await commands(bs, rid, 1)
        leg_id = reserve["payload"]["leg_id"]
        assert reserve["payload"]["quantity"] == 12
        for event in (
            StockReserved(outlet_id=donor, sku=sku, leg_id=leg_id, quantity=12),
            StockDispatched(outlet_id=donor, sku=sku, leg_id=leg_id, quantity=12),
        ):
            await emit(bs, (event, f"{donor}:{sku}", rid))
            state = "reserved" if isinstance(event, StockReserved) else "dispatched"
            await until_state(client, rid, lambda b, s=state: b["legs"][0]["state"] == s, state)
            if state == "reserved":
                assert (await client.post(f"/api/v1/transfers/{leg_id}/dispatch")).is_success
        assert (
            await client.post(f"/api/v1/transfers/{leg_id}/receive", json={"quantity": 12})
        ).is_success
        await emit(
            bs,
            (
                StockReceived(outlet_id=dest, sku=sku, leg_id=leg_id, quantity=12),
                f"{dest}:{sku}",
                rid,
            ),
        )
        body = await until_state(
            client, rid, lambda b: b["status"] == "partially_fulfilled", "closed", 15
        )
        assert body["received"] == 12
        assert "less than the smallest transfer" in body["history"][-1]["reason"]


async def test_a_request_past_its_expiry_is_not_merged_into(
    db_url: str, private_broker: Any
) -> None:
    """Between a request's expiry and the driver closing it, a new request for the outlet
    and sku was merged into it, answered 202, and lost with it when the driver came."""
    bs = private_broker.bootstrap_servers
    dest, sku = uid("o"), uid("sku")
    # The driver is held off, so the gap lasts as long as the test needs.
    settings = settings_for(db_url, bs, request_ttl_s=1.0, deadline_poll_s=3600.0)
    async with running(settings) as (app, client):
        await emit(bs, outlet(dest, "c1", -6.2, 106.8))
        await outlets_known(app, dest)
        body = {"outlet_id": dest, "sku": sku, "quantity": 5}
        first = (await client.post("/api/v1/restock-requests", json=body)).json()
        await asyncio.sleep(1.2)
        second = (await client.post("/api/v1/restock-requests", json=body)).json()
        assert second["id"] != first["id"] and second["merged"] is False
        assert (await get(client, first["id"]))["status"] == "expired"
        assert (await get(client, second["id"]))["status"] in ("open", "matching")


async def test_auto_restock_from_stock_low(db_url: str, private_broker: Any) -> None:
    bs = private_broker.bootstrap_servers
    dest, donor, sku = uid("o"), uid("o"), uid("sku")
    async with running(settings_for(db_url, bs)) as (app, client):
        await emit(
            bs,
            outlet(dest, "c1", -6.2, 106.8),
            outlet(donor, "c1", -6.2, 106.8),
            level(donor, sku, 100, 5),
            level(dest, sku, 2, 6),
            (
                StockLow(outlet_id=dest, sku=sku, available=2, reorder_point=6),
                f"{dest}:{sku}",
                None,
            ),
            (
                StockLow(outlet_id=dest, sku=sku, available=2, reorder_point=6),
                f"{dest}:{sku}",
                None,
            ),
        )

        async def opened() -> Any:
            return await scalar(app, "SELECT id FROM restock_requests WHERE outlet_id = :o", o=dest)

        rid = await wait_until(opened, what="auto request")
        # the donor's level may be projected after stock.low (another partition): the
        # driver re-matches a waiting request soon after
        body = await until_state(client, rid, lambda b: bool(b["legs"]), "a leg")
        assert body["origin"] == "auto"
        assert body["quantity"] == 10  # up to twice the reorder point
        assert leg_states(body) == [(donor, "proposed")]
        await asyncio.sleep(0.5)
        assert (
            await scalar(app, "SELECT count(*) FROM restock_requests WHERE outlet_id = :o", o=dest)
            == 1
        )


# -- restart ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn_transfer(db_url: str, bootstrap: str, port: int, group: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "JEJARING_TRANSFER_DATABASE_URL": db_url,
        "JEJARING_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "JEJARING_TRANSFER_GROUP_PREFIX": group,
        # Long enough that a decline sent while transfer is down is applied (after restart and
        # the consumer group's rejoin) before the driver would time the leg out.
        "JEJARING_TRANSFER_ACCEPT_TIMEOUT_S": "30",
        "JEJARING_TRANSFER_DEADLINE_POLL_S": "0.2",
        "JEJARING_TRANSFER_RELAY_IDLE_POLL_S": "0.1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "jejaring_transfer.entrypoints.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def wait_ready(base: str, group_count: int = 3) -> None:
    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(base_url=base, timeout=2) as c:
                resp = await c.get("/readyz")
        except httpx.HTTPError:
            return False
        consumers = resp.json().get("checks", {}).get("consumers", {})
        return (
            resp.status_code == 200
            and len(consumers) == group_count
            and all(v["assigned"] for v in consumers.values())
        )

    await wait_until(ready, timeout=120, what="transfer process ready")


async def poll_legs(base: str, rid: str, want: list[tuple[str, str]]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:

        async def check() -> Any:
            body: dict[str, Any] = (await c.get(f"/api/v1/restock-requests/{rid}")).json()
            return body if leg_states(body) == want else None

        # A restarted consumer waits for the killed member's session to expire before it
        # gets its partitions; on a busy machine that alone can take most of 30 s.
        result: dict[str, Any] = await wait_until(check, timeout=60, what=f"legs {want}")
        return result


async def test_sigkill_mid_saga_resumes_and_deadlines_hold(
    tmp_path: Path, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    db_url = f"sqlite+aiosqlite:///{tmp_path}/transfer.db"
    group = uid("transfer-k")
    dest, s1, s2, sku = uid("o"), uid("s"), uid("s"), uid("sku")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_transfer(db_url, bs, port, group)
    try:
        await wait_ready(base)
        await emit(
            bs,
            outlet(dest, "c1", -6.2, 106.8),
            (
                OfferPublished(
                    offer_id=uid("of"),
                    supplier_id=s1,
                    sku=sku,
                    quantity=50,
                    unit_price=900,
                    lead_time_hours=6,
                ),
                s1,
                None,
            ),
            (
                OfferPublished(
                    offer_id=uid("of"),
                    supplier_id=s2,
                    sku=sku,
                    quantity=50,
                    unit_price=1200,
                    lead_time_hours=6,
                ),
                s2,
                None,
            ),
        )
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:

            async def two_offers() -> bool:
                resp = await c.post(
                    "/api/v1/restock-requests",
                    json={"outlet_id": "probe", "sku": sku, "quantity": 1},
                )
                body = (await c.get(f"/api/v1/restock-requests/{resp.json()['id']}")).json()
                cands = body["explanation"][-1]["candidates"] if body["explanation"] else []
                await c.post(f"/api/v1/restock-requests/{resp.json()['id']}/cancel")
                return len(cands) == 2

            await wait_until(two_offers, timeout=30, what="offers projected")
            rid = (
                await c.post(
                    "/api/v1/restock-requests", json={"outlet_id": dest, "sku": sku, "quantity": 10}
                )
            ).json()["id"]
            leg = (await c.get(f"/api/v1/restock-requests/{rid}")).json()["legs"][0]
            assert leg["source_id"] == s1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # While transfer is dead, s1 declines: applied after the restart, re-matched to s2.
        await emit(bs, (AssignmentDeclined(leg_id=leg["id"], supplier_id=s1, reason="no"), s1, rid))
        proc = spawn_transfer(db_url, bs, port, group)
        await wait_ready(base)
        body = await poll_legs(base, rid, [(s1, "declined"), (s2, "proposed")])
        s2_accept_by = datetime.fromisoformat(body["legs"][1]["accept_by"])

        # Killed again while s2 is silent; its accept_by passes while the process is down.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_s = (s2_accept_by - utcnow()).total_seconds() + 1
        await asyncio.sleep(max(wait_s, 0))
        proc = spawn_transfer(db_url, bs, port, group)
        await wait_ready(base)
        ready_at = utcnow()
        body = await poll_legs(base, rid, [(s1, "declined"), (s2, "timed_out")])
        timed_out_at = datetime.fromisoformat(body["legs"][1]["updated_at"])
        assert timed_out_at >= s2_accept_by
        assert (timed_out_at - ready_at).total_seconds() < 5  # not stuck past the deadline
        assert body["status"] == "matching"  # waits for a source until it expires
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
