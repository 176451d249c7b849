"""Transfer's projections from stock events, applied by the handlers the consumer runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import migrations
from jejaring_shared.contracts import Envelope, Payload
from jejaring_shared.contracts.stock import OutletRegistered, StockLevelChanged, StockSurplus
from jejaring_shared.db import UnitOfWorkFactory, create_engine
from jejaring_transfer import saga
from jejaring_transfer.config import TransferSettings
from jejaring_transfer.entrypoints.consumers import consumer_specs


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
        name = {
            OutletRegistered: "stock.outlet_registered",
            StockSurplus: "stock.surplus",
            StockLevelChanged: "stock.level_changed",
        }[type(payload)]
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
        OutletRegistered(
            outlet_id="rich", name="rich", community="c1", region="r1", lat=-6.2, lon=106.8
        ),
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
