"""The unit of work and the outbox: state and events commit together or not at all (on
SQLite; the tests taking `db_url` run on PostgreSQL too)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import db as db_module
from jejaring_shared import migrations
from jejaring_shared import outbox as outbox_module
from jejaring_shared.db import UnitOfWorkFactory, create_engine
from jejaring_shared.metrics import BackboneMetrics
from jejaring_shared.outbox import OutboxRelay
from jejaring_shared.settings import KafkaSettings
from support import probe


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/u.db")
    await migrations.upgrade(engine, "support.probe_migrations")
    return engine


async def outbox_rows(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT type, key, topic FROM outbox ORDER BY id"))
        return [(r[0], r[1], r[2]) for r in rows]


async def test_commit_writes_state_and_events_together(engine: AsyncEngine) -> None:
    woken: list[bool] = []
    uows = UnitOfWorkFactory(
        engine, source="probe", registry=probe.REGISTRY, on_commit=lambda: woken.append(True)
    )
    async with uows() as uow:
        uow.session.add(probe.Effect(event_id="e", key="k", seq=1))
        env = uow.publish(probe.ThingHappened(key="k", seq=1), key="k", correlation_id="req-1")
        await uow.commit()
    assert await outbox_rows(engine) == [("probe.thing_happened", "k", probe.PROBE_TOPIC)]
    assert len(await probe.effects(engine)) == 1
    assert env.correlation_id == "req-1" and env.source == "probe"
    assert woken == [True]


@pytest.mark.parametrize("n", [40, db_module.OFF_LOOP_EVENTS + 5])
async def test_a_units_events_are_stored_in_the_order_published(db_url: str, n: int) -> None:
    """On both databases (PostgreSQL writes them in one statement): the relay sends by id,
    so ids must follow the order of publish(); bodies and times are stored as given. Also
    for a bulk unit, whose events are serialised in a thread."""
    engine = create_engine(db_url)
    try:
        await migrations.upgrade(engine, "support.probe_migrations")
        uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
        async with uows() as uow:
            sent = [
                uow.publish(probe.ThingHappened(key=f"k{i % 3}", seq=i), key=f"k{i % 3}")
                for i in range(n)
            ]
            await uow.commit()
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text("SELECT event_id, key, body, created_at FROM outbox ORDER BY id")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [r[0] for r in rows] == [str(e.id) for e in sent]
    assert [r[1] for r in rows] == [e.key for e in sent]
    assert [json.loads(r[2])["payload"]["seq"] for r in rows] == list(range(n))
    stored = rows[0][3] if isinstance(rows[0][3], datetime) else datetime.fromisoformat(rows[0][3])
    assert stored.replace(tzinfo=UTC) == sent[0].occurred_at.astimezone(UTC)


async def test_without_commit_nothing_is_written(engine: AsyncEngine) -> None:
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    async with uows() as uow:
        uow.session.add(probe.Effect(event_id="e", key="k", seq=1))
        uow.publish(probe.ThingHappened(key="k", seq=1), key="k")
    assert await outbox_rows(engine) == []
    assert await probe.effects(engine) == []


async def test_an_error_rolls_back_state_and_events(engine: AsyncEngine) -> None:
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    with pytest.raises(RuntimeError):
        async with uows() as uow:
            uow.session.add(probe.Effect(event_id="e", key="k", seq=1))
            uow.publish(probe.ThingHappened(key="k", seq=1), key="k")
            raise RuntimeError("boom")
    assert await outbox_rows(engine) == []
    assert await probe.effects(engine) == []


async def test_caused_events_carry_correlation_and_causation(engine: AsyncEngine) -> None:
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    async with uows() as uow:
        first = uow.publish(probe.ThingHappened(key="k", seq=1), key="k", correlation_id="req-9")
        second = uow.publish(probe.ThingHappened(key="k", seq=2), key="k", cause=first)
        await uow.commit()
    assert second.correlation_id == "req-9"
    assert second.causation_id == first.id
    assert second.traceparent == first.traceparent


async def test_migrations_are_idempotent(engine: AsyncEngine) -> None:
    await migrations.upgrade(engine, "support.probe_migrations")
    async with engine.connect() as conn:
        version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    assert version == "0001"


async def test_relay_with_kafka_unreachable_keeps_events_and_stops_fast(
    engine: AsyncEngine,
) -> None:
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    async with uows() as uow:
        uow.publish(probe.ThingHappened(key="k", seq=1), key="k")
        await uow.commit()
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", request_timeout_s=1.0)
    relay = OutboxRelay(engine, kafka, name="probe", metrics=BackboneMetrics("probe"))
    with pytest.raises(Exception):  # noqa: B017 (any Kafka connection error)
        await relay.publish_pending()
    assert await relay.backlog() == 1
    assert await relay.check_kafka(0.5) is False
    relay.start()
    import time

    started = time.monotonic()
    await relay.stop(timeout_s=3.0)
    assert time.monotonic() - started < 5
    assert await relay.backlog() == 1


async def test_inbox_forgets_ids_older_than_its_retention(engine: AsyncEngine) -> None:
    from datetime import timedelta

    from jejaring_shared.consumer import ConsumerRunner
    from jejaring_shared.contracts import utcnow

    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    async with engine.begin() as conn:
        for event_id, group, age in [("old", "g", 20), ("new", "g", 1), ("other", "h", 20)]:
            await conn.execute(
                sa.text(
                    "INSERT INTO inbox (consumer_group, event_id, event_type, applied_at)"
                    " VALUES (:g, :e, 't', :at)"
                ),
                {"g": group, "e": event_id, "at": utcnow() - timedelta(days=age)},
            )
    runner = ConsumerRunner(
        group_id="g",
        topics=["t"],
        handlers={},
        uow_factory=uows,
        kafka=KafkaSettings(),
        metrics=BackboneMetrics("probe"),
        inbox_retention=timedelta(days=14),
    )
    await runner._maybe_prune_inbox()
    async with engine.connect() as conn:
        left = (await conn.execute(sa.text("SELECT event_id FROM inbox ORDER BY 1"))).all()
    assert [r[0] for r in left] == ["new", "other"]

    # The database failing during this housekeeping is logged, not raised: raised, it
    # rebuilt the consumer, a rebalance of its whole group.
    def broken() -> Any:
        raise sa.exc.OperationalError("DELETE", {}, Exception("database is down"))

    runner._uows = broken  # type: ignore[assignment]
    runner._last_prune = 0.0
    await runner._maybe_prune_inbox()


async def test_a_read_only_unit_does_not_wait_for_a_writer(engine: AsyncEngine) -> None:
    """A GET's unit begins deferred: it reads while another unit holds the write lock
    (an immediate begin would wait in sqlite's busy sleeps) and cannot publish."""
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    async with uows() as writer:
        writer.session.add(probe.Effect(event_id="w", key="k", seq=1))
        await writer.session.flush()  # holds the write lock until the end of the block
        async with uows(read_only=True) as reader:
            conn = await reader.session.connection()
            rows = await asyncio.wait_for(conn.execute(sa.text("SELECT count(*) FROM effects")), 2)
            assert rows.scalar() == 0  # the writer's row is not committed yet
            with pytest.raises(RuntimeError, match="read-only"):
                reader.publish(probe.ThingHappened(key="k", seq=1), key="k")


async def test_writers_of_one_process_take_turns_in_order(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a writing unit holds the process's write lock while open: the next writer
    waits its turn (first come, first served; woken at once, not in sqlite's busy sleeps),
    and one that waits longer than the busy timeout fails as sqlite would."""
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    order: list[str] = []

    async def write(name: str, hold: asyncio.Event | None = None) -> None:
        async with uows() as uow:
            order.append(f"{name} in")
            if hold is not None:
                await hold.wait()
            uow.session.add(probe.Effect(event_id=name, key="k", seq=len(order)))
            await uow.commit()
            order.append(f"{name} out")

    hold = asyncio.Event()
    first = asyncio.create_task(write("a", hold))
    await asyncio.sleep(0.05)
    others = [asyncio.create_task(write(n)) for n in ("b", "c")]
    await asyncio.sleep(0.1)
    assert order == ["a in"]  # b and c wait for a's turn to end
    hold.set()
    await asyncio.gather(first, *others)
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]

    monkeypatch.setattr(db_module, "SQLITE_LOCK_TIMEOUT_S", 0.2)
    hold = asyncio.Event()
    holder = asyncio.create_task(write("d", hold))
    await asyncio.sleep(0.05)
    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        await write("e")
    hold.set()
    await holder
    async with engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM effects")) == 4  # not e


async def test_rows_queued_for_later_are_written_at_commit_in_order_or_not_at_all(
    engine: AsyncEngine,
) -> None:
    effects_table = probe.Effect.__table__  # type: ignore[attr-defined]
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    with pytest.raises(RuntimeError):
        async with uows() as uow:
            uow.insert_later(effects_table, {"event_id": "x", "key": "k", "seq": 9})
            raise RuntimeError("rolled back")
    async with uows() as uow:
        for seq in (3, 1, 2):
            uow.insert_later(effects_table, {"event_id": f"e{seq}", "key": "k", "seq": seq})
        with pytest.raises(ValueError):  # an executemany would drop the extra key
            uow.insert_later(effects_table, {"event_id": "e", "key": "k", "seq": 4, "id": 9})
        conn = await uow.session.connection()
        assert await conn.scalar(sa.text("SELECT count(*) FROM effects")) == 0  # not yet
        await uow.commit()
    assert [r[2] for r in await probe.effects(engine)] == [3, 1, 2]


async def test_an_event_kafka_could_not_carry_is_refused_with_its_change(
    engine: AsyncEngine,
) -> None:
    """An outbox row over Kafka's record size would stop the relay for good (every later
    event waiting behind it): the commit refuses it, and the change goes with it."""
    uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
    huge = probe.ThingHappened.model_construct(key="k" * (db_module.MAX_EVENT_BYTES + 1), seq=1)
    with pytest.raises(db_module.EventTooLarge, match="over the 900,000"):
        async with uows() as uow:
            uow.session.add(probe.Effect(event_id="e", key="k", seq=1))
            uow.publish(probe.ThingHappened(key="k", seq=0), key="k")
            uow.publish(huge, key="k")
            await uow.commit()
    assert await outbox_rows(engine) == [] and await probe.effects(engine) == []


async def test_pruning_deletes_old_published_rows_from_the_head_in_chunks(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Published rows past the retention go, a chunk per transaction, from the oldest id;
    recent and pending rows stay; a head that is not old ends it without reading on."""
    engine = create_engine(db_url)
    try:
        await migrations.upgrade(engine, "support.probe_migrations")
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM outbox"))
        uows = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
        async with uows() as uow:
            for seq in range(8):
                uow.publish(probe.ThingHappened(key="k", seq=seq), key="k")
            await uow.commit()
        async with engine.connect() as conn:
            ids = (await conn.execute(sa.text("SELECT id FROM outbox ORDER BY id"))).scalars().all()
        old = datetime(2020, 1, 1, tzinfo=UTC)
        async with engine.begin() as conn:
            for i, t in ((ids[j], old) for j in range(5)):
                await conn.execute(
                    sa.text("UPDATE outbox SET published_at = :t WHERE id = :i"), {"t": t, "i": i}
                )
            await conn.execute(
                sa.text("UPDATE outbox SET published_at = :t WHERE id = :i"),
                {"t": datetime.now(UTC), "i": ids[5]},
            )
        monkeypatch.setattr(outbox_module, "PRUNE_CHUNK", 2)
        relay = OutboxRelay(engine, KafkaSettings(), name="probe", metrics=BackboneMetrics("probe"))
        await relay._maybe_prune()
        async with engine.connect() as conn:
            left = (
                (await conn.execute(sa.text("SELECT id FROM outbox ORDER BY id"))).scalars().all()
            )
        # The 5 old ones in chunks of 2; the recent one and the pending ones stay.
        assert left == ids[5:]
    finally:
        await engine.dispose()
