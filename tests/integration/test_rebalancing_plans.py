"""Rebalancing plans over a real Kafka broker.

The first test runs the stock service next to transfer (each on its own database): the
network is built through stock's API, transfer learns it from stock's events, and an
approved plan line is reserved by stock itself. The second sends stock's answers as raw
events, to show a rejected reservation re-matched by the normal matching.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from jejaring_shared.contracts import utcnow
from jejaring_shared.contracts.catalog import ProductCreated
from jejaring_shared.contracts.stock import ReservationRejected, StockSurplus
from jejaring_shared.contracts.topics import TRANSFER_EVENTS
from jejaring_transfer.domain import plans
from support.kafka_io import read_all
from support.stock import running_stock, stock_settings
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
    uid,
    until_state,
)
from support.wait import wait_until


def product(sku: str) -> Any:
    return (
        ProductCreated(sku=sku, name="Minyak", unit="l", case_pack=5, min_transfer_qty=5),
        sku,
        None,
    )


async def stock_outlet(client: httpx.AsyncClient, oid: str, lat: float, lon: float) -> None:
    resp = await client.post(
        "/api/v1/outlets",
        json={"id": oid, "name": oid, "community": "c1", "region": "r1", "lat": lat, "lon": lon},
    )
    assert resp.status_code == 201, resp.text


async def pin(client: httpx.AsyncClient, oid: str, sku: str, rop: int, maximum: int) -> None:
    resp = await client.put(
        f"/api/v1/outlets/{oid}/stock/{sku}/settings",
        json={"reorder_point": rop, "maximum": maximum},
    )
    assert resp.status_code == 200, resp.text


async def receipt(client: httpx.AsyncClient, oid: str, sku: str, quantity: int) -> None:
    resp = await client.post(
        f"/api/v1/outlets/{oid}/receipts",
        json={
            "idempotency_key": uid("r"),
            "sku": sku,
            "quantity": quantity,
            "source": "distribution_center",
        },
    )
    assert resp.status_code == 201, resp.text


async def state(app: FastAPI) -> tuple[Any, ...]:
    """Everything an approval or a rejection could change."""
    async with app.state.runtime.engine.connect() as conn:
        lines = (
            await conn.execute(
                sa.text("SELECT id, status, request_id FROM rebalancing_plan_lines ORDER BY id")
            )
        ).all()
        plans = (await conn.execute(sa.text("SELECT id, status FROM rebalancing_plans"))).all()
        requests = await conn.scalar(sa.text("SELECT count(*) FROM restock_requests"))
        legs = await conn.scalar(sa.text("SELECT count(*) FROM legs"))
        outbox = await conn.scalar(sa.text("SELECT count(*) FROM outbox"))
    return (tuple(lines), tuple(plans), requests, legs, outbox)


async def rich_in_surplus(app: FastAPI, bs: str, rich: str, sku: str, *others: str) -> None:
    """`rich` over its maximum of 40 (100 available), as transfer projects it, and the
    product and outlets known: ready to plan."""
    await emit(bs, (StockSurplus(outlet_id=rich, sku=sku, available=100, maximum=40), rich, None))

    async def surplus_known() -> bool:
        sql = "SELECT maximum FROM stock_view WHERE outlet_id = :o AND sku = :s"
        return bool(await scalar(app, sql, o=rich, s=sku) == 40)

    await wait_until(surplus_known, timeout=30, what="rich's maximum projected")
    await projected(app, "products_view", 1, "sku", sku)
    await outlets_known(app, rich, *others)


def error(resp: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text
    assert resp.json()["error"]["field"] == field, resp.text


async def test_plan_approve_reserve_dispatch_receive_and_reject(
    db_url: str, private_broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bs = private_broker.bootstrap_servers
    rich, poor, poor2, sku = uid("rich"), uid("poor"), uid("poor2"), uid("sku")
    stock_cfg = stock_settings(f"sqlite+aiosqlite:///{tmp_path}/stock.db", bs)
    transfer_cfg = settings_for(
        db_url, bs, auto_restock=False, plan_search_effort=1_234, plan_lns_rounds=3
    )
    # The planner runs with the service's settings.
    searches: list[tuple[int, int]] = []
    solver = plans.search_solver

    def recorded(effort: int, lns_rounds: int) -> plans.Solver:
        searches.append((effort, lns_rounds))
        return solver(effort, lns_rounds)

    monkeypatch.setattr(plans, "search_solver", recorded)
    async with (
        running_stock(stock_cfg) as (_stock_app, stock),
        running(transfer_cfg) as (app, client),
    ):
        await emit(bs, product(sku))
        for oid, lat, lon in ((rich, -6.21, 106.81), (poor, -6.20, 106.80), (poor2, -6.3, 106.9)):
            await stock_outlet(stock, oid, lat, lon)
        await pin(stock, rich, sku, 10, 40)
        await pin(stock, poor, sku, 10, 30)
        await pin(stock, poor2, sku, 10, 20)
        # The first receipt crosses the maximum: stock.surplus comes before the level is
        # projected, and transfer still keeps the maximum.
        await receipt(stock, rich, sku, 100)
        await receipt(stock, poor, sku, 2)
        await receipt(stock, poor2, sku, 5)

        # Rows appear with the settings, before the receipts' levels: wait for the levels
        # and maxima themselves, or the plan may see an outlet still empty.
        want = {(rich, 100, 40), (poor, 2, 30), (poor2, 5, 20)}

        async def levels_known() -> bool:
            async with app.state.runtime.engine.connect() as conn:
                rows = await conn.execute(
                    sa.text("SELECT outlet_id, on_hand, maximum FROM stock_view WHERE sku = :s"),
                    {"s": sku},
                )
                return {tuple(r) for r in rows} == want

        await wait_until(levels_known, timeout=30, what="levels and maxima projected")
        await projected(app, "products_view", 1, "sku", sku)
        await outlets_known(app, rich, poor, poor2)

        # -- propose --
        resp = await client.post("/api/v1/rebalancing/plans", json={"skus": [sku]})
        assert searches == [(1_234, 3)]
        assert resp.status_code == 201, resp.text
        plan = resp.json()
        assert plan["status"] == "proposed" and plan["horizon_days"] == 7
        lines = {x["outlet_id"]: x for x in plan["lines"]}
        assert set(lines) == {poor, poor2}
        # A short outlet is brought to its maximum (30 - 2 = 28 here) in whole cases of five.
        assert lines[poor]["quantity"] == 25
        assert lines[poor2]["quantity"] == 15
        for x in lines.values():
            assert (x["source_kind"], x["source_id"], x["status"]) == ("outlet", rich, "proposed")
            assert x["cost"] > 0 and x["request_id"] is None
            assert "cover_after_days" in x
        assert plan["totals"] == {
            "lines": 2,
            "units": 40,
            "cost": lines[poor]["cost"] + lines[poor2]["cost"],
            "stockouts_avoided": 0,
            "short": 3,
        }
        pid = plan["id"]
        assert (await client.get(f"/api/v1/rebalancing/plans/{pid}")).json() == plan
        page = (await client.get("/api/v1/rebalancing/plans?limit=1&offset=0")).json()
        assert page["total"] == 1 and page["items"][0]["id"] == pid
        events = await read_all(bs, TRANSFER_EVENTS, expect=10**9, timeout=2.0)
        assert any(m.key == pid.encode() for m in events)  # transfer.plan_proposed

        # -- bad input changes nothing --
        before = await state(app)
        for bad, field in (
            ({"horizon_days": 0}, "horizon_days"),
            ({"horizon_days": 61}, "horizon_days"),
            ({"max_lines": 5001}, "max_lines"),
            ({"skus": []}, "skus"),
            ({"skus": ["bad sku"]}, "skus.0"),
            ({"nope": 1}, "nope"),
        ):
            resp = await client.post("/api/v1/rebalancing/plans", json=bad)
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["field"] == field, resp.text
        resp = await client.post(
            f"/api/v1/rebalancing/plans/{pid}/approve",
            json={"lines": [lines[poor]["id"], "line-nope"]},
        )
        error(resp, 422, "unknown_line", "lines")
        error(
            await client.post("/api/v1/rebalancing/plans/plan-nope/approve", json={}),
            404,
            "plan_not_found",
            "id",
        )
        error(await client.get("/api/v1/rebalancing/plans/plan-nope"), 404, "plan_not_found", "id")
        resp = await client.post(f"/api/v1/rebalancing/plans/{pid}/reject", json={"lines": []})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "lines"
        assert await state(app) == before

        # -- rejecting a line moves nothing --
        resp = await client.post(
            f"/api/v1/rebalancing/plans/{pid}/reject", json={"lines": [lines[poor2]["id"]]}
        )
        assert resp.status_code == 200, resp.text
        after = {x["outlet_id"]: x for x in resp.json()["lines"]}
        assert after[poor2]["status"] == "rejected" and after[poor2]["request_id"] is None
        assert after[poor]["status"] == "proposed" and resp.json()["status"] == "proposed"
        assert await scalar(app, "SELECT count(*) FROM restock_requests") == 0
        assert await scalar(app, "SELECT count(*) FROM legs") == 0
        resp = await client.post(
            f"/api/v1/rebalancing/plans/{pid}/approve", json={"lines": [lines[poor2]["id"]]}
        )
        error(resp, 409, "line_rejected", "lines")

        # -- approving a line opens a request with the line's source, stock reserves it --
        resp = await client.post(
            f"/api/v1/rebalancing/plans/{pid}/approve", json={"lines": [lines[poor]["id"]]}
        )
        assert resp.status_code == 200, resp.text
        approved = resp.json()
        line = next(x for x in approved["lines"] if x["id"] == lines[poor]["id"])
        assert line["status"] == "approved" and line["request_id"]
        assert approved["status"] == "approved"  # no line is left proposed
        rid = line["request_id"]
        again = await client.post(f"/api/v1/rebalancing/plans/{pid}/approve", json=None)
        assert again.status_code == 200 and again.json() == approved  # idempotent
        assert await scalar(app, "SELECT count(*) FROM restock_requests") == 1

        body = await until_state(
            client, rid, lambda b: [g["state"] for g in b["legs"]] == ["reserved"], "reserved"
        )
        assert body["origin"] == "rebalancing" and body["quantity"] == 25
        [leg] = body["legs"]
        assert (leg["source_kind"], leg["source_id"], leg["quantity"]) == ("outlet", rich, 25)
        assert f"plan {pid} line {line['id']}" in body["history"][0]["reason"]
        reservations = (await stock.get(f"/api/v1/outlets/{rich}/reservations")).json()
        assert [(r["leg_id"], r["status"]) for r in reservations["reservations"]] == [
            (leg["id"], "active")
        ]

        # -- and it is the ordinary saga from there: dispatch, receive, fulfilled --
        assert (await client.post(f"/api/v1/transfers/{leg['id']}/dispatch")).status_code == 202
        await until_state(
            client, rid, lambda b: b["legs"][0]["state"] == "dispatched", "dispatched"
        )
        resp = await client.post(f"/api/v1/transfers/{leg['id']}/receive", json={"quantity": 25})
        assert resp.status_code == 202, resp.text
        await until_state(client, rid, lambda b: b["status"] == "fulfilled", "fulfilled")
        level_poor = (await stock.get(f"/api/v1/outlets/{poor}/stock/{sku}")).json()
        assert level_poor["on_hand"] == 27
        level_rich = (await stock.get(f"/api/v1/outlets/{rich}/stock/{sku}")).json()
        assert level_rich["on_hand"] == 75

        # -- a plan past the staleness limit is not approved, and nothing changes --
        resp = await client.post("/api/v1/rebalancing/plans", json={"skus": [sku]})
        assert resp.status_code == 201, resp.text
        stale = resp.json()
        assert stale["lines"], stale  # poor2 is still short
        async with app.state.runtime.engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE rebalancing_plans SET created_at = :t WHERE id = :i"),
                {"t": utcnow() - timedelta(days=2), "i": stale["id"]},
            )
        before = await state(app)
        error(
            await client.post(f"/api/v1/rebalancing/plans/{stale['id']}/approve"),
            409,
            "plan_stale",
            "id",
        )
        assert await state(app) == before


async def test_a_rejected_reservation_is_rematched_by_normal_matching(
    private_broker: Any, tmp_path: Path
) -> None:
    bs = private_broker.bootstrap_servers
    rich, mid, poor, sku = uid("rich"), uid("mid"), uid("poor"), uid("sku")
    db = f"sqlite+aiosqlite:///{tmp_path}/transfer.db"
    async with running(settings_for(db, bs, auto_restock=False)) as (app, client):
        await emit(
            bs,
            product(sku),
            outlet(rich, "c1", -6.21, 106.81),
            outlet(mid, "c2", -6.5, 107.0),
            outlet(poor, "c1", -6.20, 106.80),
            level(rich, sku, 100, 10),
            level(mid, sku, 50, 10),  # no maximum known: never a plan source
            level(poor, sku, 0, 10),
        )
        await projected(app, "stock_view", 3, "sku", sku)
        await rich_in_surplus(app, bs, rich, sku, mid, poor)

        resp = await client.post(
            "/api/v1/rebalancing/plans", json={"skus": [sku], "horizon_days": 3}
        )
        assert resp.status_code == 201, resp.text
        plan = resp.json()
        [line] = plan["lines"]
        assert (line["source_id"], line["outlet_id"], line["quantity"]) == (rich, poor, 20)
        assert plan["totals"]["stockouts_avoided"] == 1
        resp = await client.post(f"/api/v1/rebalancing/plans/{plan['id']}/approve")
        assert resp.status_code == 200, resp.text
        rid = resp.json()["lines"][0]["request_id"]
        [reserve] = await commands(bs, rid, 1)
        assert reserve["payload"]["outlet_id"] == rich

        await emit(
            bs,
            (
                ReservationRejected(
                    outlet_id=rich,
                    sku=sku,
                    leg_id=reserve["payload"]["leg_id"],
                    quantity=20,
                    available=5,
                    reason="insufficient_stock",
                ),
                f"{rich}:{sku}",
                rid,
            ),
        )
        body = await until_state(client, rid, lambda b: len(b["legs"]) == 2, "re-matched")
        assert [(g["source_id"], g["state"]) for g in body["legs"]] == [
            (rich, "rejected"),
            (mid, "proposed"),
        ]
        assert body["excluded_sources"] == [f"outlet:{rich}"]
        again = (await commands(bs, rid, 2))[1]
        assert again["type"] == "stock.reserve" and again["payload"]["outlet_id"] == mid
        assert (await get(client, rid))["origin"] == "rebalancing"


async def test_a_second_plan_approved_for_the_same_shortage_is_refused_not_sent_twice(
    private_broker: Any, tmp_path: Path
) -> None:
    """Two plans proposed from the same state (a double click, two ops members) plan the
    same lines: once one is approved, the other's lines no longer hold (the outlet's need
    is covered by what is coming), and approving it is refused, changing nothing."""
    bs = private_broker.bootstrap_servers
    rich, poor, sku = uid("rich"), uid("poor"), uid("sku")
    db = f"sqlite+aiosqlite:///{tmp_path}/transfer.db"
    async with running(settings_for(db, bs, auto_restock=False)) as (app, client):
        await emit(
            bs,
            product(sku),
            outlet(rich, "c1", -6.21, 106.81),
            outlet(poor, "c1", -6.20, 106.80),
            level(rich, sku, 100, 10),
            level(poor, sku, 0, 10),
        )
        await projected(app, "stock_view", 2, "sku", sku)
        await rich_in_surplus(app, bs, rich, sku, poor)

        ids = []
        for _ in range(2):
            resp = await client.post("/api/v1/rebalancing/plans", json={"skus": [sku]})
            assert resp.status_code == 201, resp.text
            [line] = resp.json()["lines"]
            assert (line["source_id"], line["outlet_id"]) == (rich, poor)
            ids.append((resp.json()["id"], line["id"]))
        resp = await client.post(f"/api/v1/rebalancing/plans/{ids[0][0]}/approve")
        assert resp.status_code == 200, resp.text
        before = await state(app)
        resp = await client.post(f"/api/v1/rebalancing/plans/{ids[1][0]}/approve")
        error(resp, 409, "line_lapsed", "lines")
        assert f"{ids[1][1]}: already_covered" in resp.json()["error"]["message"]
        assert await state(app) == before
        # What is left to do with it: reject it.
        resp = await client.post(f"/api/v1/rebalancing/plans/{ids[1][0]}/reject")
        assert resp.status_code == 200 and resp.json()["status"] == "rejected", resp.text
        # A plan proposed now sees what is coming: nothing to do. Approved whole, it is
        # decided (it stayed "proposed").
        resp = await client.post("/api/v1/rebalancing/plans", json={"skus": [sku]})
        assert resp.status_code == 201 and resp.json()["lines"] == [], resp.text
        empty = resp.json()["id"]
        resp = await client.post(f"/api/v1/rebalancing/plans/{empty}/approve")
        assert resp.status_code == 200 and resp.json()["status"] == "approved", resp.text
