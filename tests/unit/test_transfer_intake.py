"""Restock requests committed together (api/intake.py): each caller still gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import migrations
from jejaring_shared.db import UnitOfWork, UnitOfWorkFactory, create_engine
from jejaring_shared.errors import ApiError
from jejaring_transfer.adapters.tables import (
    legs,
    offers_view,
    outlets_view,
    products_view,
    restock_requests,
    stock_view,
    suppliers_view,
)
from jejaring_transfer.api.intake import RestockIntake
from jejaring_transfer.config import TransferSettings
from jejaring_transfer.saga import Ctx, Opened, lock_skus_for_matching, move_leg, open_request


@asynccontextmanager
async def _migrated(url: str) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """A migrated transfer database at `url`: its engine (disposed after) and URL."""
    engine = create_engine(url)
    try:
        await migrations.upgrade(engine, "jejaring_transfer.migrations")
        yield engine, url
    finally:
        await engine.dispose()


@pytest.fixture
async def transfer_db(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """A migrated transfer database on SQLite: its engine and URL."""
    async with _migrated(f"sqlite+aiosqlite:///{tmp_path}/transfer.db") as db:
        yield db


@pytest.fixture
async def pg_transfer_db(pg_database_url: str) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """A migrated transfer database on PostgreSQL: its engine and URL."""
    async with _migrated(pg_database_url) as db:
        yield db


async def _donor(engine: AsyncEngine, now: datetime) -> None:
    """One known outlet with 25 rice on hand and a reorder point of 10: 15 to give."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(outlets_view).values(
                outlet_id="donor", community="c1", status="active", updated_at=now
            )
        )
        await conn.execute(
            sa.insert(stock_view).values(
                outlet_id="donor",
                sku="rice",
                on_hand=25,
                reserved=0,
                available=25,
                reorder_point=10,
                updated_at=now,
            )
        )


async def _given(conn: Any) -> dict[str, int]:
    """Units given to each outlet's requests by their legs."""
    return dict(
        (
            await conn.execute(
                sa.select(restock_requests.c.outlet_id, sa.func.sum(legs.c.quantity))
                .join(legs, legs.c.request_id == restock_requests.c.id)
                .group_by(restock_requests.c.outlet_id)
            )
        ).all()
    )


async def test_a_batch_commits_together_and_a_bad_request_fails_alone(
    transfer_db: tuple[AsyncEngine, str],
) -> None:
    engine, url = transfer_db
    now = datetime.now(UTC)
    await _donor(engine, now)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(products_view).values(
                sku="gone",
                case_pack=1,
                min_transfer_qty=1,
                pareto_class="C",
                perishable=False,
                retired=True,
                updated_at=now,
            )
        )
    intake = RestockIntake(
        UnitOfWorkFactory(engine, source="transfer"), TransferSettings(database_url=url)
    )

    async def submit(outlet_id: str, sku: str, quantity: int) -> Opened | ApiError:
        try:
            return await intake.submit(
                outlet_id=outlet_id, sku=sku, quantity=quantity, needed_by=None, now=now
            )
        except ApiError as exc:
            return exc

    # All submitted at once: they share a batch, which the retired product breaks.
    a, b, gone, a_again = await asyncio.gather(
        submit("a", "rice", 10),
        submit("b", "rice", 10),
        submit("c", "gone", 1),
        submit("a", "rice", 2),
    )
    assert isinstance(gone, ApiError) and gone.code == "product_retired"
    assert isinstance(a, Opened) and isinstance(b, Opened) and isinstance(a_again, Opened)
    assert (a.merged, b.merged, a_again.merged) == (False, False, True)
    assert a_again.request_id == a.request_id and a_again.quantity == 12

    async with engine.connect() as conn:
        requests = (
            await conn.execute(sa.select(restock_requests.c.outlet_id).order_by("outlet_id"))
        ).all()
        taken = (
            await conn.execute(sa.select(legs.c.request_id, legs.c.quantity).order_by("id"))
        ).all()
        outbox = await conn.scalar(sa.text("SELECT count(*) FROM outbox"))
    assert [r.outlet_id for r in requests] == ["a", "b"]
    # First come, and never below the donor's reorder point (25 - 10 = 15 to give): a
    # takes 10, b the 5 left, a's merged +2 finds nothing.
    assert sorted(q for _rid, q in taken) == [5, 10]
    assert outbox and outbox > 0


@pytest.mark.parametrize("n", [1, 70])
async def test_every_caller_is_answered(transfer_db: tuple[AsyncEngine, str], n: int) -> None:
    engine, url = transfer_db
    intake = RestockIntake(
        UnitOfWorkFactory(engine, source="transfer"), TransferSettings(database_url=url)
    )
    now = datetime.now(UTC)
    opened = await asyncio.gather(
        *(
            intake.submit(outlet_id=f"o{i}", sku="rice", quantity=1, needed_by=None, now=now)
            for i in range(n)
        )
    )
    assert len({o.request_id for o in opened}) == n  # more than one batch when n > 64
    async with engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(restock_requests)) == n


async def test_a_batch_reads_the_network_once_and_each_match_sees_what_the_last_took(
    transfer_db: tuple[AsyncEngine, str],
) -> None:
    """Requests of one batch share one read of the network; each match takes its legs out
    of it, so together they never give more than the donor can spare (25 on hand, reorder
    point 10: 15), first come first served, as one at a time would. The destinations are
    outlets transfer has not heard of yet (the read covers them too)."""
    engine, url = transfer_db
    now = datetime.now(UTC)
    await _donor(engine, now)
    statements: list[str] = []
    sa.event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_a: statements.append(sql),
    )
    intake = RestockIntake(
        UnitOfWorkFactory(engine, source="transfer"), TransferSettings(database_url=url)
    )
    opened = await asyncio.gather(
        *(
            intake.submit(outlet_id=f"x{i}", sku="rice", quantity=4, needed_by=None, now=now)
            for i in range(5)
        )
    )
    async with engine.connect() as conn:
        given = await _given(conn)
    assert all(not o.merged for o in opened)
    assert given == {"x0": 4, "x1": 4, "x2": 4, "x3": 3}  # x4: nothing left to give
    # One batch: one read of each (stock, products, open requests), and each new request
    # written once, with its first match.
    assert sum("FROM stock_view" in s for s in statements) == 1
    assert sum("FROM products_view" in s for s in statements) == 1
    assert sum("FROM restock_requests" in s and "open_key IN" in s for s in statements) == 1
    assert sum("FROM restock_requests" in s for s in statements) == 2  # and this test's
    assert sum(s.startswith("INSERT INTO restock_requests") for s in statements) == 5
    assert not [s for s in statements if s.startswith("UPDATE restock_requests")]


async def _merges_within_a_batch(engine: AsyncEngine, url: str) -> None:
    """A request merges into the open one of its outlet and sku, whether that was opened
    before the batch or earlier in the same batch (the batch reads the open requests once
    and keeps them current)."""
    now = datetime.now(UTC)
    await _donor(engine, now)
    intake = RestockIntake(
        UnitOfWorkFactory(engine, source="transfer"), TransferSettings(database_url=url)
    )
    before = await intake.submit(outlet_id="a", sku="rice", quantity=2, needed_by=None, now=now)
    statements: list[str] = []
    sa.event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_a: statements.append(sql),
    )
    opened = await asyncio.gather(
        *(
            intake.submit(outlet_id=outlet, sku="rice", quantity=q, needed_by=None, now=now)
            for outlet, q in (("b", 3), ("a", 1), ("b", 4), ("a", 2))
        )
    )
    assert [o.merged for o in opened] == [False, True, True, True]
    assert {o.request_id for o in opened} == {before.request_id, opened[0].request_id}
    # One batch (not each request alone): the open requests were read once, for all keys.
    reads = [s for s in statements if "FROM restock_requests" in s and "open_key" in s]
    assert len(reads) == 1 and ("open_key IN" in reads[0] or "ANY" in reads[0])
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    restock_requests.c.outlet_id,
                    restock_requests.c.quantity,
                    restock_requests.c.merged,
                    restock_requests.c.status,
                ).order_by("outlet_id")
            )
        ).all()
        given = await _given(conn)
    assert [tuple(r) for r in rows] == [("a", 5, 2, "matching"), ("b", 7, 1, "matching")]
    assert given == {"a": 5, "b": 7}  # 12 of the donor's 15 to spare, every merge matched


async def test_requests_merge_within_a_batch(transfer_db: tuple[AsyncEngine, str]) -> None:
    await _merges_within_a_batch(*transfer_db)


async def test_requests_merge_within_a_batch_on_postgresql(
    pg_transfer_db: tuple[AsyncEngine, str],
) -> None:
    await _merges_within_a_batch(*pg_transfer_db)


async def test_ids_with_colons_never_share_an_open_request(
    transfer_db: tuple[AsyncEngine, str],
) -> None:
    """Ids may contain `:`; outlet "a:b" with sku "c" and outlet "a" with sku "b:c" are two
    requests (the open key once joined them with `:`), while a repeat still merges."""
    engine, url = transfer_db
    intake = RestockIntake(
        UnitOfWorkFactory(engine, source="transfer"), TransferSettings(database_url=url)
    )
    now = datetime.now(UTC)

    async def submit(outlet_id: str, sku: str) -> Opened:
        return await intake.submit(
            outlet_id=outlet_id, sku=sku, quantity=1, needed_by=None, now=now
        )

    first = await submit("a:b", "c")
    second = await submit("a", "b:c")
    again = await submit("a:b", "c")
    assert not first.merged and not second.merged and first.request_id != second.request_id
    assert again.merged and again.request_id == first.request_id


async def test_migration_0005_rewrites_the_open_keys(tmp_path: Path) -> None:
    """Requests open before the upgrade keep their place: "outlet:sku" becomes "outlet|sku",
    closed ones (no key) stay as they are."""
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda sync: command.upgrade(
                    migrations.alembic_config("jejaring_transfer.migrations", sync), "0004"
                )
            )
            now = datetime.now(UTC)
            row = {
                "sku": "c", "requested_quantity": 1, "quantity": 1, "expires_at": now,
                "status": "open", "origin": "api", "received": 0, "merged": 0, "attempts": 0,
                "excluded": [], "created_at": now, "updated_at": now,
            }  # fmt: skip
            await conn.execute(
                sa.insert(restock_requests),
                [
                    {**row, "id": "open", "outlet_id": "a:b", "open_key": "a:b:c"},
                    {**row, "id": "closed", "outlet_id": "x", "open_key": None},
                ],
            )
        await migrations.upgrade(engine, "jejaring_transfer.migrations")
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.select(restock_requests.c.id, restock_requests.c.open_key)
            )
            keys = {rid: key for rid, key in result}
    finally:
        await engine.dispose()
    assert keys == {"open": "a:b|c", "closed": None}


_WAITING_FOR_A_LOCK = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'"
)


async def _until_waiting(engine: AsyncEngine, task: asyncio.Task[None]) -> None:
    """Until another transaction waits for a lock (or `task` ended without waiting)."""
    async with asyncio.timeout(20):
        while not task.done():
            async with engine.connect() as conn:
                if await conn.scalar(_WAITING_FOR_A_LOCK):
                    return
            await asyncio.sleep(0.05)


async def _supplier_offer(engine: AsyncEngine) -> None:
    """Supplier s1 offering 10 oil."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(suppliers_view).values(
                supplier_id="s1",
                community="c1",
                assigned=0,
                accepted=0,
                declined=0,
                timed_out=0,
                shipped=0,
                updated_at=now,
            )
        )
        await conn.execute(
            sa.insert(offers_view).values(
                offer_id="of1",
                supplier_id="s1",
                sku="oil",
                quantity=10,
                unit_price=1000,
                lead_time_hours=24,
                min_order=1,
                status="active",
                updated_at=now,
            )
        )


async def _ask_for_oil(uow: UnitOfWork, settings: TransferSettings, outlet_id: str) -> None:
    await open_request(
        Ctx(uow, settings, datetime.now(UTC)),
        outlet_id=outlet_id,
        sku="oil",
        quantity=10,
        needed_by=None,
        origin="api",
    )


async def test_two_transactions_never_hand_out_one_offer_twice(
    pg_transfer_db: tuple[AsyncEngine, str],
) -> None:
    """PostgreSQL, READ COMMITTED: a second transaction matching the same sku waits for the
    first to end, then reads the leg it committed. Without that wait both read the offer's
    10 units as free and both assigned them (nothing downstream refuses an offer's
    excess, as stock refuses a donor's)."""
    engine, url = pg_transfer_db
    await _supplier_offer(engine)
    uows = UnitOfWorkFactory(engine, source="transfer")
    settings = TransferSettings(database_url=url)

    async def second() -> None:
        async with uows() as uow:
            await _ask_for_oil(uow, settings, "b")
            await uow.commit()

    async with uows() as first:
        await _ask_for_oil(first, settings, "a")  # the offer's 10 go to a, not committed yet
        task = asyncio.create_task(second())
        # b waits for a's transaction: before reading the offer (or, without the sku's
        # lock, only at the supplier's row, after reading it as free).
        await _until_waiting(engine, task)
        await first.commit()
    await asyncio.wait_for(task, 20)
    async with engine.connect() as conn:
        given = (
            await conn.execute(
                sa.select(legs.c.outlet_id, legs.c.quantity).where(legs.c.offer_id == "of1")
            )
        ).all()
    assert [tuple(g) for g in given] == [("a", 10)]


async def test_a_leg_move_takes_its_skus_matching_lock_before_the_requests_row(
    pg_transfer_db: tuple[AsyncEngine, str],
) -> None:
    """One lock order on PostgreSQL: a sku's matching lock, then a request's row. A leg
    that fails and is re-matched used to lock the row first and the sku after, while the
    deadline driver's re-match takes skus first and rows after: a deadlock."""
    engine, url = pg_transfer_db
    await _supplier_offer(engine)
    uows = UnitOfWorkFactory(engine, source="transfer")
    settings = TransferSettings(database_url=url)
    async with uows() as uow:
        await _ask_for_oil(uow, settings, "a")
        await uow.commit()
    async with engine.connect() as conn:
        leg_id = str(await conn.scalar(sa.select(legs.c.id)))

    async def match_oil() -> None:
        async with uows() as uow:
            await lock_skus_for_matching(await uow.session.connection(), ["oil"])

    async with uows() as moving:
        moved = await move_leg(
            Ctx(moving, settings, datetime.now(UTC)),
            leg_id,
            "accepted",
            allowed_from=("proposed",),
        )
        assert moved is not None
        task = asyncio.create_task(match_oil())
        await _until_waiting(engine, task)
        assert not task.done(), "the leg's move did not hold the sku's matching lock"
        await moving.commit()
    await asyncio.wait_for(task, 20)


def test_a_prebuilt_update_refuses_a_key_that_is_no_column() -> None:
    """A prebuilt UPDATE takes its SET columns from the parameters: a misspelt one would be
    dropped silently (`.values()` refused it), so set_params refuses it instead."""
    from jejaring_transfer.saga import set_params

    assert set_params(legs, {"state": "reserved"}, id="lg-1") == {
        "b_id": "lg-1",
        "state": "reserved",
    }
    with pytest.raises(ValueError, match="stat"):
        set_params(legs, {"stat": "reserved"}, id="lg-1")
