"""On PostgreSQL one relay per service publishes; leadership passes on when it stops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import migrations
from jejaring_shared.db import create_engine
from jejaring_shared.metrics import BackboneMetrics
from jejaring_shared.outbox import OutboxRelay
from jejaring_shared.settings import KafkaSettings
from support.wait import wait_until


@asynccontextmanager
async def two_relays(url: str) -> AsyncIterator[tuple[AsyncEngine, OutboxRelay, OutboxRelay]]:
    """Two replicas' relays of one service on one engine (Kafka is never reached)."""
    engine = create_engine(url)
    await migrations.upgrade(engine, "support.probe_migrations")
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    first = OutboxRelay(engine, kafka, name="probe", metrics=BackboneMetrics("probe"))
    second = OutboxRelay(engine, kafka, name="probe", metrics=BackboneMetrics("probe"))
    try:
        yield engine, first, second
    finally:
        await first.stop()
        await second.stop()
        await engine.dispose()


async def test_leadership_moves_to_the_next_relay(pg_database_url: str) -> None:
    async with two_relays(pg_database_url) as (_engine, first, second):
        assert await first._is_leader()
        assert not await second._is_leader()
        # Same engine, same pool: the lock must not stay behind on a pooled connection.
        await first.stop()
        assert await second._is_leader()
        assert not await first._is_leader()


async def test_a_leader_whose_lock_connection_died_stops_at_its_next_round(
    pg_database_url: str,
) -> None:
    """The server ending the lock's session frees the lock for another replica: the relay
    must see it at its very next round (the SELECT 1 probe runs only every 0.5 s)."""
    async with two_relays(pg_database_url) as (engine, first, second):
        assert await first._is_leader()
        assert first._leader_conn is not None
        raw = await first._leader_conn.get_raw_connection()
        pid = raw.driver_connection.get_server_pid()  # type: ignore[union-attr]
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await conn.commit()
        await wait_until(
            lambda: _closed(raw.driver_connection), timeout=5, what="the session ended"
        )
        with pytest.raises(ConnectionError):
            await first._is_leader()
        assert await second._is_leader()


async def _closed(driver: Any) -> bool:
    return bool(driver.is_closed())
