"""The stock service's API on SQLite and PostgreSQL with Kafka unreachable (events are read
back from the outbox, where they commit with the change)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from jejaring_stock.adapters import repository as repo
from support.stock import (
    level,
    make_outlet,
    new_id,
    outbox_events,
    receive,
    running_stock,
    stock_settings,
)


@pytest.fixture
async def stock(db_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = stock_settings(db_url, sweep_interval_s=3600)
    async with running_stock(settings) as pair:
        yield pair


def sale(key: str, sku: str, qty: int = 1, at: datetime | None = None) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "sku": sku,
        "quantity": qty,
        "sold_at": (at or datetime.now(UTC)).isoformat(),
    }


async def types_for(app: FastAPI, outlet: str, sku: str) -> list[str]:
    return [t for t, _ in await outbox_events(app, key_prefix=f"{outlet}:{sku}")]


async def test_outlet_register_change_and_events(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = stock
    outlet = await make_outlet(client)
    dup = await client.post("/api/v1/outlets", json={"id": outlet, "name": "x"})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "outlet_exists"
    resp = await client.patch(f"/api/v1/outlets/{outlet}", json={"status": "at_risk"})
    assert resp.status_code == 200 and resp.json()["status"] == "at_risk"
    bad = await client.patch(f"/api/v1/outlets/{outlet}", json={"status": "sleepy"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "status"
    events = await outbox_events(app, key_prefix=outlet)
    assert [(t, p["status"]) for t, p in events] == [
        ("stock.outlet_registered", "active"),
        ("stock.outlet_registered", "at_risk"),
    ]
    missing = await client.get("/api/v1/outlets/nope/stock")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "outlet_not_found"
    # A trailing slash is not redirected to the service's own address (through the
    # gateway that would be an internal one): a JSON 404 like any unknown path.
    slash = await client.get(f"/api/v1/outlets/{outlet}/", follow_redirects=False)
    assert slash.status_code == 404 and "location" not in slash.headers
    assert slash.json()["error"]["code"] == "not_found"


async def test_changes_to_one_outlet_at_once_announce_both(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """Two PATCHes of one outlet at once (on PostgreSQL truly at once): the last event
    announced carries both changes. Each read the outlet unlocked before, and the later
    commit could announce the outlet as it read it: a closed outlet announced active."""
    app, client = stock
    for round_ in range(5):
        outlet = await make_outlet(client)
        closing, moving = await asyncio.gather(
            client.patch(f"/api/v1/outlets/{outlet}", json={"status": "closed"}),
            client.patch(f"/api/v1/outlets/{outlet}", json={"region": f"r-{round_}"}),
        )
        assert closing.status_code == moving.status_code == 200
        *_, (_type, last) = await outbox_events(app, key_prefix=outlet)
        assert (last["status"], last["region"]) == ("closed", f"r-{round_}")


async def test_same_pos_batch_three_times_counts_once(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = stock
    outlet = await make_outlet(client)
    await receive(client, outlet, "beras", 100)
    earlier = datetime.now(UTC) - timedelta(days=3)
    lines = [sale(f"pos-{i}", "beras" if i % 2 else "gula", 2, earlier) for i in range(10)]
    answers = []
    for _ in range(3):
        resp = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": lines})
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
    assert answers[0] == {"received": 10, "accepted": 10, "duplicates": []}
    for later in answers[1:]:
        assert later["accepted"] == 0
        assert sorted(later["duplicates"]) == sorted(line["idempotency_key"] for line in lines)
    assert (await level(client, outlet, "beras"))["on_hand"] == 100 - 5 * 2
    # gula was never received: on hand goes negative, the sale stands, ops are told once.
    gula = await level(client, outlet, "gula")
    assert gula["on_hand"] == -10
    assert (await types_for(app, outlet, "gula")).count("stock.discrepancy") == 1
    # Original times are kept.
    moves = (await client.get(f"/api/v1/outlets/{outlet}/movements?sku=gula")).json()
    assert {m["occurred_at"][:10] for m in moves["movements"]} == {earlier.date().isoformat()}
    check = (await client.get(f"/api/v1/outlets/{outlet}/ledger-check")).json()
    assert check == {"levels": 2, "mismatches": []}


async def test_repeated_key_within_one_batch_is_a_duplicate(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = stock
    outlet = await make_outlet(client)
    lines = [sale("k1", "a"), sale("k1", "a"), sale("k2", "a")]
    resp = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": lines})
    assert resp.json() == {"received": 3, "accepted": 2, "duplicates": ["k1"]}


async def test_mixed_batch_one_change_and_one_event_per_sku(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = stock
    outlet = await make_outlet(client)
    await receive(client, outlet, "a", 5)
    first = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": [sale("s1", "a")]})
    assert first.json() == {"received": 1, "accepted": 1, "duplicates": []}
    before = len(await outbox_events(app, key_prefix=f"{outlet}:"))
    # Known sku, a sku new at this outlet, a resent line and a key repeated in the batch.
    lines = [sale("s1", "a"), sale("s2", "a", 2), sale("s3", "b", 3), sale("s3", "b", 3)]
    resp = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": lines})
    assert resp.json() == {"received": 4, "accepted": 2, "duplicates": ["s3", "s1"]}
    assert (await level(client, outlet, "a"))["on_hand"] == 5 - 1 - 2
    assert (await level(client, outlet, "b"))["on_hand"] == -3
    events = (await outbox_events(app, key_prefix=f"{outlet}:"))[before:]
    changed = [p for t, p in events if t == "stock.level_changed"]
    assert sorted((p["sku"], p["on_hand"]) for p in changed) == [("a", 2), ("b", -3)]
    assert [t for t, _ in events].count("stock.discrepancy") == 1
    # All resent: nothing changes, nothing is announced.
    again = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": lines[:3]})
    assert again.json()["accepted"] == 0
    assert len(await outbox_events(app, key_prefix=f"{outlet}:")) == before + len(events)
    check = (await client.get(f"/api/v1/outlets/{outlet}/ledger-check")).json()
    assert check == {"levels": 2, "mismatches": []}


async def test_concurrent_batches_count_each_line_once(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The same batch resent while the first is in flight, and batches touching the same
    skus in opposite orders: each line counts once, no deadlock, levels match the ledger."""
    _app, client = stock
    outlet = await make_outlet(client)
    skus = [f"k{i}" for i in range(8)]
    await receive(client, outlet, skus[0], 1)  # one known sku, the others new
    same = [sale(f"same-{i}", skus[i % 8]) for i in range(40)]
    forward = [sale(f"fw-{i}", skus[i % 8], 2) for i in range(40)]
    backward = [sale(f"bw-{i}", skus[7 - i % 8], 3) for i in range(40)]
    url = f"/api/v1/outlets/{outlet}/sales"
    answers = await asyncio.gather(
        *(client.post(url, json={"lines": b}) for b in (same, forward, same, backward, same))
    )
    assert [r.status_code for r in answers] == [200] * 5, [r.text for r in answers]
    assert sum(r.json()["accepted"] for r in answers) == 120
    stock_now = (await client.get(f"/api/v1/outlets/{outlet}/stock")).json()["levels"]
    assert sum(lv["on_hand"] for lv in stock_now) == 1 - 40 - 80 - 120
    check = (await client.get(f"/api/v1/outlets/{outlet}/ledger-check")).json()
    assert check == {"levels": 8, "mismatches": []}


_WAITING_FOR_A_LOCK = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'"
)


async def test_a_key_committed_while_a_batch_waits_for_its_lock_counts_once(
    pg_database_url: str,
) -> None:
    """PostgreSQL's one-statement intake takes its snapshot before it waits for the level
    lock, so it cannot see a key another transaction commits meanwhile: the unique index
    (ON CONFLICT) must still skip it. Counted once, and on hand moves once per key."""
    async with running_stock(stock_settings(pg_database_url, sweep_interval_s=3600)) as pair:
        app, client = pair
        outlet = await make_outlet(client)
        await receive(client, outlet, "k0", 10)
        engine = app.state.runtime.engine
        now = datetime.now(UTC)

        def row(key: str) -> dict[str, Any]:
            return {"sku": "k0", "kind": "sale", "quantity": -1, "occurred_at": now,
                    "idempotency_key": key}  # fmt: skip

        async def second() -> set[str]:
            async with engine.connect() as conn, conn.begin():
                applied = await repo.apply_movements(
                    conn, outlet, "pos", now, [row("race-1"), row("race-2")]
                )
                assert applied is not None
                return applied[0]

        async with engine.connect() as first:
            txn = await first.begin()
            applied = await repo.apply_movements(first, outlet, "pos", now, [row("race-1")])
            assert applied is not None and applied[0] == {"race-1"}
            waiting = asyncio.create_task(second())
            # Commit only once the second batch is queued on the level lock (so its
            # statement began before the key was committed), not merely not yet sent.
            for _ in range(200):
                async with engine.connect() as probe:
                    queued = (await probe.execute(_WAITING_FOR_A_LOCK)).scalar()
                if queued or waiting.done():
                    break
                await asyncio.sleep(0.05)
            assert queued and not waiting.done(), "the second batch should wait for the lock"
            await txn.commit()
        assert await asyncio.wait_for(waiting, 10) == {"race-2"}
        assert (await level(client, outlet, "k0"))["on_hand"] == 8
        check = (await client.get(f"/api/v1/outlets/{outlet}/ledger-check")).json()
        assert check == {"levels": 1, "mismatches": []}


async def test_batch_for_an_unknown_outlet_writes_nothing(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = stock
    before = await outbox_events(app)
    outlet = new_id()
    lines = [sale("u1", "a"), sale("u2", "b")]
    resp = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": lines})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "outlet_not_found"
    assert await outbox_events(app) == before
    await make_outlet(client, outlet)
    assert (await client.get(f"/api/v1/outlets/{outlet}/movements")).json()["movements"] == []
    resp = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": lines})
    assert resp.json()["accepted"] == 2


async def test_bad_batches_are_refused_whole_with_the_field(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = stock
    outlet = await make_outlet(client)
    before = await outbox_events(app)
    cases = [
        ([sale("a", "x", 0)], "lines.0.quantity", "too_small"),
        (
            [sale("a", "x"), {**sale("b", "x"), "sold_at": "2024-01-01T10:00:00"}],
            "lines.1.sold_at",
            None,
        ),
        (
            [sale("a", "x", at=datetime.now(UTC) + timedelta(days=3))],
            "lines.0.sold_at",
            "sold_in_future",
        ),
        ([{**sale("a", "x"), "price": 5}], "lines.0.price", "unknown_field"),
        ([], "lines", None),
        # A lone surrogate (JSON "\\ud800") is no text a database can store.
        ([sale("a", "x"), sale("b\ud800", "x")], "lines.1.idempotency_key", "invalid"),
        # Stock's own movement keys: a sale keyed so would make a leg's dispatch a duplicate.
        ([sale("transfer_out:leg-1", "x")], "lines.0.idempotency_key", "reserved_key"),
    ]
    for lines, field, code in cases:
        resp = await client.post(
            f"/api/v1/outlets/{outlet}/sales",
            content=json.dumps({"lines": lines}),  # ASCII escapes: a lone surrogate goes too
            headers={"content-type": "application/json"},
        )
        assert resp.status_code == 422, resp.text
        err = resp.json()["error"]
        assert err["field"] == field
        if code:
            assert err["code"] == code
    too_many = [sale(f"k{i}", "x") for i in range(1001)]
    resp = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": too_many})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "lines"
    assert await outbox_events(app) == before
    assert (await client.get(f"/api/v1/outlets/{outlet}/stock")).json()["levels"] == []


async def test_stock_low_once_per_crossing(stock: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = stock
    outlet = await make_outlet(client)
    await receive(client, outlet, "teh", 15)
    resp = await client.put(
        f"/api/v1/outlets/{outlet}/stock/teh/settings", json={"reorder_point": 10, "maximum": 40}
    )
    assert resp.status_code == 200 and resp.json()["reorder_point_pinned"]

    async def sell(n: int) -> None:
        r = await client.post(
            f"/api/v1/outlets/{outlet}/sales", json={"lines": [sale(new_id("s"), "teh", n)]}
        )
        assert r.status_code == 200

    async def lows() -> int:
        return (await types_for(app, outlet, "teh")).count("stock.low")

    await sell(3)  # 12
    assert await lows() == 0
    await sell(3)  # 9: crosses
    assert await lows() == 1
    for _ in range(4):  # 7, 5, 3, 1: still below, no more alerts
        await sell(2)
    assert await lows() == 1
    await receive(client, outlet, "teh", 20)  # 21: back above
    await sell(11)  # 10: crosses again
    assert await lows() == 2
    await sell(10)  # 0
    types = await types_for(app, outlet, "teh")
    assert types.count("stock.out") == 1 and types.count("stock.low") == 2
    await receive(client, outlet, "teh", 50)  # above the maximum
    assert (await types_for(app, outlet, "teh")).count("stock.surplus") == 1


async def test_movement_endpoints_and_idempotency(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = stock
    outlet = await make_outlet(client)
    base = f"/api/v1/outlets/{outlet}"
    await receive(client, outlet, "kopi", 30, key="rcpt-1")
    again = await client.post(
        f"{base}/receipts",
        json={
            "idempotency_key": "rcpt-1",
            "sku": "kopi",
            "quantity": 30,
            "source": "distribution_center",
        },
    )
    assert again.status_code == 200 and again.json()["duplicate"] is True
    no_supplier = await client.post(
        f"{base}/receipts",
        json={"idempotency_key": "r2", "sku": "kopi", "quantity": 3, "source": "supplier"},
    )
    assert no_supplier.status_code == 422 and no_supplier.json()["error"]["field"] == "supplier_id"
    for key in ("transfer_in:leg-1", "opening:kopi"):
        reserved = await client.post(
            f"{base}/returns",
            json={"idempotency_key": key, "sku": "kopi", "quantity": 1, "reason": "changed mind"},
        )
        assert reserved.status_code == 422, reserved.text
        assert reserved.json()["error"] == {
            "code": "reserved_key",
            "message": "idempotency keys beginning transfer_out: or transfer_in: or opening: "
            "are stock's own",
            "field": "idempotency_key",
        }
    r = await client.post(
        f"{base}/write-offs",
        json={"idempotency_key": "w1", "sku": "kopi", "quantity": 2, "reason": "expired"},
    )
    assert r.status_code == 201
    r = await client.post(
        f"{base}/returns",
        json={"idempotency_key": "ret1", "sku": "kopi", "quantity": 1, "reason": "wrong item"},
    )
    assert r.status_code == 201
    r = await client.post(
        f"{base}/adjustments",
        json={
            "idempotency_key": "count-1",
            "sku": "kopi",
            "counted": 25,
            "reason": "monthly count",
        },
    )
    assert r.status_code == 201 and r.json()["delta"] == 25 - 29
    r = await client.post(
        f"{base}/adjustments",
        json={
            "idempotency_key": "count-1",
            "sku": "kopi",
            "counted": 25,
            "reason": "monthly count",
        },
    )
    assert r.status_code == 200 and r.json()["duplicate"] is True
    no_reason = await client.post(
        f"{base}/adjustments", json={"idempotency_key": "c2", "sku": "kopi", "counted": 1}
    )
    assert no_reason.status_code == 422 and no_reason.json()["error"]["field"] == "reason"
    assert (await level(client, outlet, "kopi"))["on_hand"] == 25
    moves = (await client.get(f"{base}/movements")).json()["movements"]
    assert [(m["kind"], m["quantity"]) for m in moves] == [
        ("receipt", 30),
        ("write_off", -2),
        ("return", 1),
        ("adjustment", -4),
    ]
    assert all(m["actor"] and m["reason"] for m in moves)


async def test_opening_stock_csv_reports_bad_rows_and_reruns_cleanly(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = stock
    outlet = await make_outlet(client)
    text = (
        "sku,quantity,reorder_point\nberas,40,10\ngula,-3,\nminyak,abc,\nberas,5,\n,4,\nteh,12,\n"
    )
    url = f"/api/v1/outlets/{outlet}/opening-stock"
    headers = {"content-type": "text/csv"}
    first = (await client.post(url, content=text, headers=headers)).json()
    assert first["created"] == 2 and first["rejected"] == 4
    assert [(e["line"], e["field"]) for e in first["errors"]] == [
        (3, "quantity"),
        (4, "quantity"),
        (5, "sku"),
        (6, "sku"),
    ]
    second = (await client.post(url, content=text, headers=headers)).json()
    assert second["created"] == 0 and second["unchanged"] == 2
    # Another quantity for a sku already opened is refused on its row, not "unchanged".
    third = (await client.post(url, content="sku,quantity\nberas,10\n", headers=headers)).json()
    assert (third["created"], third["unchanged"], third["rejected"]) == (0, 0, 1)
    assert [(e["line"], e["field"], e["code"]) for e in third["errors"]] == [
        (2, "quantity", "opening_exists")
    ]
    beras = await level(client, outlet, "beras")
    assert beras["on_hand"] == 40 and beras["reorder_point"] == 10
    bad = await client.post(url, content="item,qty\nx,1\n", headers=headers)
    assert bad.status_code == 400


async def test_reservations_over_the_api(stock: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = stock
    outlet = await make_outlet(client)
    base = f"/api/v1/outlets/{outlet}"
    await receive(client, outlet, "susu", 10)
    r = await client.post(
        f"{base}/reservations", json={"leg_id": "L1", "sku": "susu", "quantity": 7}
    )
    assert r.status_code == 201 and r.json()["available"] == 3
    r = await client.post(
        f"{base}/reservations", json={"leg_id": "L2", "sku": "susu", "quantity": 4}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "insufficient_stock"
    assert r.json()["error"]["field"] == "quantity"
    r = await client.post(f"{base}/reservations/L1/dispatch")
    assert r.status_code == 200 and r.json()["status"] == "dispatched"
    lv = await level(client, outlet, "susu")
    assert (lv["on_hand"], lv["reserved"], lv["available"]) == (3, 0, 3)
    r = await client.post(
        f"{base}/reservations", json={"leg_id": "L3", "sku": "susu", "quantity": 2}
    )
    assert r.status_code == 201
    r = await client.post(f"{base}/reservations/L3/release", json={"reason": "cancelled"})
    assert r.status_code == 200 and r.json()["status"] == "released"
    r = await client.post(f"{base}/reservations/L3/dispatch")
    assert r.status_code == 409 and r.json()["error"]["code"] == "reservation_released"
    # The destination receives less than was sent: a reason is required.
    dest = await make_outlet(client)
    r = await client.post(
        f"/api/v1/outlets/{dest}/transfers-in",
        json={"leg_id": "L1", "sku": "susu", "quantity": 6, "sent_quantity": 7},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "reason_required"
    body = {"leg_id": "L1", "sku": "susu", "quantity": 6, "sent_quantity": 7, "reason": "1 torn"}
    r = await client.post(f"/api/v1/outlets/{dest}/transfers-in", json=body)
    assert r.status_code == 201
    r = await client.post(f"/api/v1/outlets/{dest}/transfers-in", json=body)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    assert (await level(client, dest, "susu"))["on_hand"] == 6
    types = await types_for(app, outlet, "susu")
    assert types.count("stock.reserved") == 2 and types.count("stock.dispatched") == 1
    assert types.count("stock.reservation_released") == 1


async def test_expired_reservation_stops_counting_at_once(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = stock  # the sweeper is slowed down to an hour here
    outlet = await make_outlet(client)
    base = f"/api/v1/outlets/{outlet}"
    await receive(client, outlet, "roti", 5)
    r = await client.post(
        f"{base}/reservations",
        json={"leg_id": "E1", "sku": "roti", "quantity": 5, "expires_in_s": 3},
    )
    assert r.status_code == 201
    assert (await level(client, outlet, "roti"))["available"] == 0
    await asyncio.sleep(3.2)
    lv = await level(client, outlet, "roti")
    assert (lv["reserved"], lv["available"]) == (0, 5)
    # Listed, and filtered, as expired before the sweeper marks it so.
    for status, legs in (("expired", ["E1"]), ("active", []), (None, ["E1"])):
        listed = await client.get(
            f"{base}/reservations", params={"status": status} if status else {}
        )
        assert [r["leg_id"] for r in listed.json()["reservations"]] == legs, status
    bad = await client.get(f"{base}/reservations", params={"status": "gone"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "status"
    # Reserving releases the expired one in the same transaction, so all 5 can be taken.
    r = await client.post(
        f"{base}/reservations", json={"leg_id": "E2", "sku": "roti", "quantity": 5}
    )
    assert r.status_code == 201
    r = await client.post(f"{base}/reservations/E1/dispatch")
    assert r.status_code == 409 and r.json()["error"]["code"] == "reservation_expired"
    released = [
        p
        for t, p in await outbox_events(app, key_prefix=outlet)
        if t == "stock.reservation_released"
    ]
    assert [(p["leg_id"], p["reason"]) for p in released] == [("E1", "expired")]


async def test_planning_figures_past_any_shelf_are_refused_on_their_field(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """3,000,000,000 overflowed PostgreSQL's integer column (503, as if it were down) and
    10**19 SQLite's (500); a CSV row so was no row error but the whole file's 503."""
    _app, client = stock
    outlet = await make_outlet(client)
    for field in ("reorder_point", "maximum", "safety_stock"):
        resp = await client.put(
            f"/api/v1/outlets/{outlet}/stock/beras/settings", json={field: 3_000_000_000}
        )
        assert (resp.status_code, resp.json()["error"]["field"]) == (422, field)
    resp = await client.post(
        f"/api/v1/outlets/{outlet}/opening-stock",
        content="sku,quantity,safety_stock\nberas,5,10000000000000000000\nteh,5,2\n",
        headers={"content-type": "text/csv"},
    )
    report = resp.json()
    assert (resp.status_code, report["created"]) == (200, 1), resp.text
    assert [(e["line"], e["field"]) for e in report["errors"]] == [(2, "safety_stock")]


async def test_a_reservation_with_a_key_that_is_no_column_is_refused() -> None:
    """The prebuilt insert takes its columns from the row: a misspelt key would be dropped
    silently (`.values()` refused it), so it is refused before the database is asked."""
    with pytest.raises(ValueError, match="leg"):
        await repo.insert_reservation(None, {"leg": "lg-1", "quantity": 1})  # type: ignore[arg-type]


async def test_opening_stock_at_or_below_its_reorder_point_is_low(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """An outlet opened with 5 of an item whose reorder point is 20 is short from the
    start: stock.low must say so once, or auto-restock never hears of it."""
    app, client = stock
    outlet = await make_outlet(client)
    resp = await client.post(
        f"/api/v1/outlets/{outlet}/opening-stock",
        content="sku,quantity,reorder_point\nberas,5,20\nteh,50,20\n",
        headers={"content-type": "text/csv"},
    )
    assert resp.json()["created"] == 2, resp.text
    assert (await types_for(app, outlet, "beras")).count("stock.low") == 1
    assert "stock.low" not in await types_for(app, outlet, "teh")
    # The other order: the reorder point pinned first, then the first stock, still low.
    resp = await client.put(
        f"/api/v1/outlets/{outlet}/stock/gula/settings", json={"reorder_point": 20}
    )
    assert resp.status_code == 200, resp.text
    await receive(client, outlet, "gula", 5)
    assert (await types_for(app, outlet, "gula")).count("stock.low") == 1
    await receive(client, outlet, "gula", 1)  # still low: no second announcement
    assert (await types_for(app, outlet, "gula")).count("stock.low") == 1


async def test_a_sale_stamped_in_local_time_is_kept_as_the_same_instant(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """POS clocks in Depok send +07:00. SQLite keeps a time's wall clock and drops its
    offset: 03:00+07:00 was stored as 03:00 UTC, seven hours late and, for the daily
    sales rate, on the next day."""
    _app, client = stock
    outlet = await make_outlet(client)
    await receive(client, outlet, "beras", 10)
    local = datetime.now(UTC).astimezone(timezone(timedelta(hours=7))) - timedelta(hours=1)
    resp = await client.post(
        f"/api/v1/outlets/{outlet}/sales", json={"lines": [sale("s-tz", "beras", 1, local)]}
    )
    assert resp.status_code == 200, resp.text
    moves = (await client.get(f"/api/v1/outlets/{outlet}/movements?sku=beras")).json()
    [sold] = [m for m in moves["movements"] if m["kind"] == "sale"]
    assert datetime.fromisoformat(sold["occurred_at"]) == local
