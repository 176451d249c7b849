"""Transfer's projections, and the saga steps stock's and suppliers' events drive, applied
by the handlers the consumer runs, each event in a unit of work of its own (a consumer
batch may end between any two events of one change)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import migrations
from jejaring_shared.contracts import Envelope, Payload
from jejaring_shared.contracts.stock import (
    OutletRegistered,
    StockDispatched,
    StockLevelChanged,
    StockReceived,
    StockReserved,
    StockSurplus,
)
from jejaring_shared.contracts.supplier import AssignmentShipped, OfferPublished, SupplierRegistered
from jejaring_shared.db import UnitOfWorkFactory, create_engine
from jejaring_transfer import saga
from jejaring_transfer.adapters.tables import legs, restock_requests
from jejaring_transfer.config import TransferSettings
from jejaring_transfer.domain import matching as m
from jejaring_transfer.entrypoints.consumers import consumer_specs

_NAMES: dict[type[Payload], str] = {
    OutletRegistered: "stock.outlet_registered",
    StockSurplus: "stock.surplus",
    StockLevelChanged: "stock.level_changed",
    StockReserved: "stock.reserved",
    StockDispatched: "stock.dispatched",
    StockReceived: "stock.received",
}


@pytest.fixture
async def transfer(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, TransferSettings]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/transfer.db"
    engine = create_engine(url)
    await migrations.upgrade(engine, "jejaring_transfer.migrations")
    yield engine, TransferSettings(database_url=url)
    await engine.dispose()


async def _apply(engine: AsyncEngine, settings: TransferSettings, *events: Payload) -> None:
    """Each event in its own unit of work, as a consumer batch may end between any two."""
    [stock_spec] = [s for s in consumer_specs(settings) if s.group_id.endswith("-stock")]
    uows = UnitOfWorkFactory(engine, source="transfer")
    for payload in events:
        name = _NAMES[type(payload)]
        envelope = Envelope(type=name, source="stock", key="k", payload=payload.model_dump())
        async with uows() as uow:
            await stock_spec.handlers[name](uow, envelope, payload)
            await uow.commit()


async def _can_give(engine: AsyncEngine, outlet_id: str, sku: str) -> int | None:
    """What matching may take from the outlet; None: not a candidate at all."""
    async with engine.connect() as conn:
        network = await saga.network_for(conn, [sku], datetime.now(UTC))
    stock = network.stock.get((outlet_id, sku))
    return None if stock is None else stock.available - stock.reorder_point


async def test_a_first_surplus_before_its_level_is_no_source_until_the_level_is_known(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    engine, settings = transfer
    await _apply(
        engine,
        settings,
        _outlet("rich"),
        StockSurplus(outlet_id="rich", sku="rice", available=100, maximum=40),
    )
    # Between the two events of one change: the reorder point is not known yet (the
    # handler used to project the level with a reorder point of 0: all 100 to give).
    assert await _can_give(engine, "rich", "rice") is None
    await _apply(
        engine,
        settings,
        StockLevelChanged(
            outlet_id="rich",
            sku="rice",
            on_hand=100,
            reserved=0,
            available=100,
            reorder_point=30,
            maximum=40,
        ),
    )
    assert await _can_give(engine, "rich", "rice") == 70
    async with engine.connect() as conn:
        maximum = await conn.scalar(sa.text("SELECT maximum FROM stock_view"))
    assert maximum == 40


def _outlet(outlet_id: str) -> OutletRegistered:
    return OutletRegistered(
        outlet_id=outlet_id, name=outlet_id, community="c1", region="r1", lat=-6.2, lon=106.8
    )


def _level(available: int, reserved: int = 0) -> StockLevelChanged:
    return StockLevelChanged(
        outlet_id="donor",
        sku="rice",
        on_hand=available + reserved,
        reserved=reserved,
        available=available,
        reorder_point=10,
    )


async def _donor_and_request(engine: AsyncEngine, settings: TransferSettings) -> str:
    """A donor with 25 rice and a reorder point of 10 (15 to give), and a request of 10
    from outlet "a", matched to it: returns the leg's id."""
    await _apply(
        engine,
        settings,
        _outlet("donor"),
        _level(25),
    )
    await _open(engine, settings, 10, None)
    async with engine.connect() as conn:
        return str(await conn.scalar(sa.select(legs.c.id)))


async def test_a_reserved_leg_still_counts_at_its_donor_before_the_level_arrives(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    """stock.reserved ends the leg's "pending" count at the donor; the donor's
    stock.level_changed may come in a later transaction. In between, a match must not see
    the reserved units as free again (15 to give, 10 reserved: 5 left, never 15)."""
    engine, settings = transfer
    leg_id = await _donor_and_request(engine, settings)
    assert await _can_give(engine, "donor", "rice") == 5  # the proposed leg is pending
    await _apply(
        engine, settings, StockReserved(outlet_id="donor", sku="rice", leg_id=leg_id, quantity=10)
    )
    assert await _can_give(engine, "donor", "rice") == 5
    await _apply(engine, settings, _level(15, reserved=10))  # the absolute figures again
    assert await _can_give(engine, "donor", "rice") == 5


async def test_a_leg_cancelled_while_its_dispatch_is_on_its_way_can_still_be_received(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    """The source asked to dispatch, then the request was cancelled: the release reached
    stock after the dispatch and found nothing, and stock.dispatched follows. The units
    are on their way: the leg goes on to dispatched and then received, not lost."""
    engine, settings = transfer
    leg_id = await _donor_and_request(engine, settings)
    await _apply(
        engine, settings, StockReserved(outlet_id="donor", sku="rice", leg_id=leg_id, quantity=10)
    )
    uows = UnitOfWorkFactory(engine, source="transfer")
    async with uows() as uow:
        ctx = saga.Ctx(uow, settings, datetime.now(UTC))
        request_id = (await saga.get_leg(await ctx.conn(), leg_id) or {})["request_id"]
        await saga.stop_request(ctx, request_id, "cancelled", "no longer needed")
        await uow.commit()
    await _apply(
        engine, settings, StockDispatched(outlet_id="donor", sku="rice", leg_id=leg_id, quantity=10)
    )
    async with engine.connect() as conn:
        leg = (await conn.execute(sa.select(legs).where(legs.c.id == leg_id))).mappings().one()
    assert (leg["state"], leg["sent_quantity"]) == ("dispatched", 10)
    await _apply(
        engine, settings, StockReceived(outlet_id="a", sku="rice", leg_id=leg_id, quantity=10)
    )
    async with engine.connect() as conn:
        state = await conn.scalar(sa.select(legs.c.state).where(legs.c.id == leg_id))
        request = (
            (
                await conn.execute(
                    sa.select(restock_requests).where(restock_requests.c.id == request_id)
                )
            )
            .mappings()
            .one()
        )
    assert state == "received"
    assert (request["status"], request["received"]) == ("cancelled", 10)


async def _open(
    engine: AsyncEngine,
    settings: TransferSettings,
    quantity: int,
    needed_by: datetime | None,
    *,
    outlet_id: str = "a",
    sku: str = "rice",
) -> saga.Opened:
    async with UnitOfWorkFactory(engine, source="transfer")() as uow:
        opened = await saga.open_request(
            saga.Ctx(uow, settings, datetime.now(UTC)),
            outlet_id=outlet_id,
            sku=sku,
            quantity=quantity,
            needed_by=needed_by,
            origin="api",
        )
        await uow.commit()
    return opened


async def test_a_merge_needed_sooner_expires_sooner(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    """An auto request (no needed-by: 72 h) merged with one needed tomorrow takes the
    sooner needed-by and its expiry (needed-by + grace), so its reservations do not
    outlive the need by two days; a later needed-by changes neither."""
    engine, settings = transfer
    first = await _open(engine, settings, 5, None)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    await _open(engine, settings, 1, tomorrow)
    await _open(engine, settings, 1, tomorrow + timedelta(days=1))
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(restock_requests).where(restock_requests.c.id == first.request_id)
                )
            )
            .mappings()
            .one()
        )
    assert saga.aware(row["needed_by"]) == tomorrow
    assert saga.aware(row["expires_at"]) == tomorrow + timedelta(seconds=settings.expiry_grace_s)


async def test_a_request_past_its_expiry_is_not_matched_again(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    """Between its expiry and the driver closing it, a request is not matched again (a
    rejection would otherwise reserve stock the driver releases moments later)."""
    engine, settings = transfer
    await _apply(
        engine,
        settings,
        _outlet("donor"),
        _level(25),
    )
    opened = await _open(engine, settings, 10, None)
    async with UnitOfWorkFactory(engine, source="transfer")() as uow:
        ctx = saga.Ctx(uow, settings, datetime.now(UTC) + timedelta(days=4))
        request = await saga.lock_request(await ctx.conn(), opened.request_id)
        assert request is not None
        await (await ctx.conn()).execute(sa.delete(legs))  # as if its leg had failed
        assert await saga.match_request(ctx, request, announce=False) == 0
        ctx.now = datetime.now(UTC)
        assert await saga.match_request(ctx, request, announce=False) == 10


async def _supplier_event(
    engine: AsyncEngine, settings: TransferSettings, payload: Payload
) -> None:
    [spec] = [s for s in consumer_specs(settings) if s.group_id.endswith("-supplier")]
    name = {
        SupplierRegistered: "supplier.registered",
        OfferPublished: "supplier.offer_published",
        AssignmentShipped: "supplier.assignment_shipped",
    }[type(payload)]
    envelope = Envelope(type=name, source="supplier", key="sup_1", payload=payload.model_dump())
    async with UnitOfWorkFactory(engine, source="transfer")() as uow:
        await spec.handlers[name](uow, envelope, payload)
        await uow.commit()


async def _leg_state(engine: AsyncEngine, leg_id: str) -> tuple[str, int | None]:
    async with engine.connect() as conn:
        leg = (await conn.execute(sa.select(legs).where(legs.c.id == leg_id))).mappings().one()
    return leg["state"], leg["sent_quantity"]


async def test_a_supplier_leg_called_off_that_was_shipped_before_the_supplier_heard_is_shipped(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    """The supplier shipped in the moment between the leg being called off (its request
    cancelled, or the leg timed out) and the supplier service hearing of it: the goods
    are on their way, so the leg is shipped (and can be received), not left called off.
    Another supplier's shipment of it changes nothing."""
    engine, settings = transfer
    await _supplier_event(
        engine,
        settings,
        SupplierRegistered(supplier_id="sup_1", name="Bu Sari", kind="small_producer"),
    )
    await _supplier_event(
        engine,
        settings,
        OfferPublished(
            offer_id="off_1",
            supplier_id="sup_1",
            sku="tahu",
            quantity=50,
            unit_price=5_000,
            lead_time_hours=2,
        ),
    )
    uows = UnitOfWorkFactory(engine, source="transfer")
    for outlet_id, how in (("a", "cancelled"), ("b", "timed_out")):
        opened = await _open(engine, settings, 10, None, outlet_id=outlet_id, sku="tahu")
        async with engine.connect() as conn:
            leg_id = str(
                await conn.scalar(
                    sa.select(legs.c.id).where(
                        legs.c.request_id == opened.request_id, legs.c.source_kind == "supplier"
                    )
                )
            )
        async with uows() as uow:
            ctx = saga.Ctx(uow, settings, datetime.now(UTC))
            if how == "cancelled":
                await saga.stop_request(ctx, opened.request_id, "cancelled", "no longer needed")
            else:
                assert await saga.leg_failed(
                    ctx, leg_id, "timed_out", allowed_from=("proposed",), reason="accept_timeout"
                )
            await uow.commit()
        assert (await _leg_state(engine, leg_id))[0] == how
        other = AssignmentShipped(leg_id=leg_id, supplier_id="sup_2", quantity=10, note=None)
        await _supplier_event(engine, settings, other)
        assert (await _leg_state(engine, leg_id))[0] == how
        mine = AssignmentShipped(leg_id=leg_id, supplier_id="sup_1", quantity=10, note=None)
        await _supplier_event(engine, settings, mine)
        assert await _leg_state(engine, leg_id) == ("shipped", 10)


async def test_requests_nobody_can_fill_do_not_keep_newer_ones_from_being_rematched(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    """The driver re-matches the oldest waiting requests first, a window at a time: old
    requests for a sku nobody holds must not fill that window, or a newer request whose
    donor just got stock waits until it expires."""
    engine, settings = transfer
    await _apply(
        engine,
        settings,
        _outlet("donor"),
        _level(10),  # at its reorder point: nothing to give yet
    )
    for outlet_id, sku in (("a", "gone"), ("b", "gone"), ("c", "rice")):
        await _open(engine, settings, 5, None, outlet_id=outlet_id, sku=sku)
    await _apply(engine, settings, _level(25))  # the donor is restocked
    async with UnitOfWorkFactory(engine, source="transfer")() as uow:
        given = await saga.rematch_waiting(saga.Ctx(uow, settings, datetime.now(UTC)), limit=2)
        await uow.commit()
    assert given == 5


async def test_the_rematch_window_moves_on_past_requests_it_cannot_fill(
    transfer: tuple[AsyncEngine, TransferSettings],
) -> None:
    """An older request the driver's filter lets through but matching cannot fill (its one
    donor failed it before: excluded) filled the window of every round, oldest first, and
    a newer one the donor can fill was never looked at. Each round now reads on from where
    the last ended, and starts again from the oldest at the end."""
    engine, settings = transfer
    await _apply(engine, settings, _outlet("donor"), _level(10))  # nothing to give yet
    old = (await _open(engine, settings, 5, None, outlet_id="a")).request_id
    new = (await _open(engine, settings, 5, None, outlet_id="b")).request_id
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(restock_requests)
            .where(restock_requests.c.id == old)
            .values(excluded=[m.source_key("outlet", "donor")])
        )
    await _apply(engine, settings, _level(25))  # 15 to give
    window = saga.RematchWindow()
    given, seen = [], []
    for _ in range(3):
        async with UnitOfWorkFactory(engine, source="transfer")() as uow:
            ctx = saga.Ctx(uow, settings, datetime.now(UTC))
            given.append(await saga.rematch_waiting(ctx, limit=1, window=window))
            await uow.commit()
        seen.append(window.after[1] if window.after else None)
    assert given == [0, 5, 0]
    # Round 3: nothing after the new one waits any more, so it starts from the oldest.
    assert seen == [old, new, old]
