"""On PostgreSQL one relay per service publishes; leadership passes on when it stops."""

from __future__ import annotations

from jejaring_shared import migrations
from jejaring_shared.db import create_engine
from jejaring_shared.metrics import BackboneMetrics
from jejaring_shared.outbox import OutboxRelay
from jejaring_shared.settings import KafkaSettings


async def test_leadership_moves_to_the_next_relay(pg_database_url: str) -> None:
    engine = create_engine(pg_database_url)
    await migrations.upgrade(engine, "support.probe_migrations")
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    first = OutboxRelay(engine, kafka, name="probe", metrics=BackboneMetrics("probe"))
    second = OutboxRelay(engine, kafka, name="probe", metrics=BackboneMetrics("probe"))
    try:
        assert await first._is_leader()
        assert not await second._is_leader()
        # Same engine, same pool: the lock must not stay behind on a pooled connection.
        await first.stop()
        assert await second._is_leader()
        assert not await first._is_leader()
    finally:
        await first.stop()
        await second.stop()
        await engine.dispose()
