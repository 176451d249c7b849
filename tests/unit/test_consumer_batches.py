"""A fetched batch: every partition's messages in one unit of work and one offset commit,
falling back to one partition, then one message, at a time when anything fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import migrations
from jejaring_shared.consumer import ConsumerRunner, HandlerTimeout, is_dependency_failure
from jejaring_shared.contracts import Envelope
from jejaring_shared.db import UnitOfWorkFactory, create_engine
from jejaring_shared.metrics import BackboneMetrics
from jejaring_shared.settings import KafkaSettings
from support import probe


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/c.db")
    await migrations.upgrade(engine, "support.probe_migrations")
    return engine


class _Consumer:
    """The two calls the runner makes on aiokafka's consumer after applying a batch."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def highwater(self, _tp: TopicPartition) -> int | None:
        return None


def _runner(
    engine: AsyncEngine,
    tps: list[TopicPartition],
    handler: Any = None,
    handler_timeout_s: float = 30.0,
) -> ConsumerRunner:
    """A runner whose failures are dead letters at once (one attempt)."""
    runner = ConsumerRunner(
        group_id=probe.GROUP,
        topics=[probe.PROBE_TOPIC],
        handlers={"probe.thing_happened": handler or probe.make_handler()},
        uow_factory=UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY),
        kafka=KafkaSettings(),
        metrics=BackboneMetrics("t"),
        registry=probe.REGISTRY,
        max_attempts=1,
        retry_backoff_s=0.01,
        handler_timeout_s=handler_timeout_s,
    )
    runner.assigned.update(tps)
    return runner


def _batch(keys: dict[int, list[str]]) -> dict[TopicPartition, list[Any]]:
    """Per partition, one message per key given, seq counting up within the partition."""
    batch: dict[TopicPartition, list[Any]] = {}
    for partition, ks in keys.items():
        tp = TopicPartition(probe.PROBE_TOPIC, partition)
        batch[tp] = [
            SimpleNamespace(
                value=Envelope(
                    type="probe.thing_happened",
                    source="t",
                    key=k,
                    payload={"key": k, "seq": seq},
                ).to_bytes(),
                topic=tp.topic,
                partition=partition,
                offset=100 + seq,
                key=k.encode(),
                headers=[],
            )
            for seq, k in enumerate(ks)
        ]
    return batch


async def _inbox(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM inbox")) or 0)


async def test_every_partition_is_applied_in_one_unit_and_committed_at_once(
    engine: AsyncEngine,
) -> None:
    batch = _batch({0: ["a", "a", "a"], 1: ["b", "b"], 2: ["c"]})
    consumer = _Consumer()
    await _runner(engine, list(batch))._process_batch(consumer, batch)
    assert consumer.commits == [{tp: ms[-1].offset + 1 for tp, ms in batch.items()}]
    rows = await probe.effects(engine)
    applied = [(k, s) for _, k, s, _ in rows]
    assert applied == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("c", 0)]
    assert await _inbox(engine) == 6

    # Delivered again (a crash before the offsets were committed): nothing applies twice.
    await _runner(engine, list(batch))._process_batch(consumer, batch)
    assert len(await probe.effects(engine)) == 6
    assert await _inbox(engine) == 6


async def test_a_failing_message_sends_the_batch_back_to_one_partition_at_a_time(
    engine: AsyncEngine,
) -> None:
    batch = _batch({0: ["a", "a"], 1: ["b", "boom", "b"]})
    consumer = _Consumer()
    runner = _runner(engine, list(batch))

    dead: list[str] = []

    async def dead_letter(msg: Any, reason: str, detail: str) -> None:
        dead.append(f"{msg.partition}@{msg.offset}:{reason}")

    runner._dead_letter = dead_letter  # type: ignore[method-assign]  # no broker here
    await runner._process_batch(consumer, batch)
    # Partition 0 together, partition 1 one by one: each committed on its own.
    assert consumer.commits == [
        {TopicPartition(probe.PROBE_TOPIC, 0): 102},
        {TopicPartition(probe.PROBE_TOPIC, 1): 103},
    ]
    assert dead == ["1@101:handler_failed"]
    assert sorted((k, s) for _, k, s, _ in await probe.effects(engine)) == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 2),
    ]
    assert await _inbox(engine) == 4


async def test_a_handlers_integrity_error_is_a_failure_and_an_applied_id_a_duplicate(
    engine: AsyncEngine,
) -> None:
    """Only an id the inbox already holds means "already applied" (its handler does not
    run); a constraint a handler breaks is its failure: retried, then dead-lettered, never
    dropped."""
    calls: list[str] = []

    async def breaks_a_constraint(uow: Any, envelope: Envelope, _payload: Any) -> None:
        calls.append(str(envelope.id))
        conn = await uow.session.connection()
        for _ in range(2):  # the same primary key twice
            await conn.execute(
                sa.text(
                    "INSERT INTO effects (id, event_id, key, seq, applied_by) "
                    "VALUES (7, 'x', 'k', 0, '?')"
                )
            )

    for outcome in ("dead", "duplicate"):
        runner = _runner(engine, [])
        runner._handlers["probe.thing_happened"] = breaks_a_constraint
        dead: list[str] = []

        async def dead_letter(msg: Any, reason: str, detail: str, dead: list[str] = dead) -> None:
            dead.append(reason)

        runner._dead_letter = dead_letter  # type: ignore[method-assign]  # no broker here
        msg = next(iter(_batch({0: ["k"]}).values()))[0]
        if outcome == "duplicate":  # another delivery of this event was applied first
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO inbox (consumer_group, event_id, event_type, applied_at) "
                        "VALUES (:g, :e, 'probe.thing_happened', '2026-01-01')"
                    ),
                    {"g": probe.GROUP, "e": str(Envelope.from_bytes(msg.value).id)},
                )
        calls.clear()
        await runner._process(msg)
        if outcome == "dead":
            assert dead == ["handler_failed"] and len(calls) == 1
            assert await _inbox(engine) == 0  # the claim rolled back with the handler
        else:
            assert dead == [] and calls == []
            handled = runner._metrics.handled.labels(
                probe.GROUP, "probe.thing_happened", "duplicate"
            )
            assert handled._value.get() == 1


async def test_two_deliveries_at_once_apply_an_event_once_on_postgresql(
    pg_database_url: str,
) -> None:
    """Two deliveries of one event in two transactions at once (PostgreSQL): the second
    one's claim waits for the first, then finds the id taken and skips the handler."""
    engine = create_engine(pg_database_url)
    try:
        await migrations.upgrade(engine, "support.probe_migrations")
        started, release = asyncio.Event(), asyncio.Event()
        calls: list[str] = []

        async def slow(uow: Any, envelope: Envelope, _payload: Any) -> None:
            calls.append(str(envelope.id))
            started.set()
            await release.wait()

        first, second = _runner(engine, []), _runner(engine, [])
        first._handlers["probe.thing_happened"] = slow
        second._handlers["probe.thing_happened"] = slow
        msg, *later = next(iter(_batch({0: ["k", "k", "k"]}).values()))
        one = asyncio.create_task(first._process(msg))
        await started.wait()
        other = asyncio.create_task(second._process(msg))
        try:
            await asyncio.sleep(0.3)
            assert not other.done()  # its claim waits for the first transaction
        finally:
            release.set()
            await asyncio.gather(one, other)
        assert len(calls) == 1
        assert await _inbox(engine) == 1
        handled = second._metrics.handled.labels(probe.GROUP, "probe.thing_happened", "duplicate")
        assert handled._value.get() == 1
        # A batch claims all its ids in one statement; the one applied before is skipped.
        calls.clear()
        assert await second._apply_together([msg, *later])
        assert len(calls) == 2 and str(Envelope.from_bytes(msg.value).id) not in calls
        assert await _inbox(engine) == 3
    finally:
        await engine.dispose()


def _timing_runner(engine: AsyncEngine, handler: Any) -> ConsumerRunner:
    """A runner whose handler has 50 ms."""
    return _runner(engine, [], handler, handler_timeout_s=0.05)


async def test_a_handler_over_its_time_is_a_handler_timeout_and_changes_nothing(
    engine: AsyncEngine,
) -> None:
    """A handler that overruns is cut off as HandlerTimeout (a failure of the message,
    dead-lettered once its attempts are spent, here one; never mistaken for a dependency
    outage), and its unit of work rolls back with the inbox claim: the event applies when
    delivered again."""
    apply = probe.make_handler()

    async def slow(uow: Any, envelope: Envelope, payload: Any) -> None:
        await apply(uow, envelope, payload)
        await asyncio.sleep(5)

    ((_tp, (msg,)),) = _batch({0: ["a"]}).items()
    runner = _timing_runner(engine, slow)
    envelope, payload = runner._decode(msg.value)
    assert envelope is not None
    with pytest.raises(HandlerTimeout):
        await runner._apply(envelope, payload)
    assert not is_dependency_failure(HandlerTimeout("took too long"))
    assert await probe.effects(engine) == [] and await _inbox(engine) == 0

    dead: list[str] = []

    async def dead_letter(msg: Any, reason: str, detail: str) -> None:
        dead.append(f"{msg.offset}:{reason}:{detail}")

    runner._dead_letter = dead_letter  # type: ignore[method-assign]  # no broker here
    await runner._process(msg)
    assert dead == [
        "100:handler_failed:jejaring_shared.consumer.HandlerTimeout: handler took over 0.05 s"
    ]

    runner = _timing_runner(engine, apply)
    assert await runner._apply(envelope, payload) == "applied"
    assert len(await probe.effects(engine)) == 1 and await _inbox(engine) == 1


async def test_a_handlers_own_timeout_is_not_a_handler_timeout(engine: AsyncEngine) -> None:
    """A TimeoutError the handler raises itself (a dependency timing out) goes on as it
    is, which the runner retries as an outage, without limit: the runner's own limit did
    not expire."""

    async def dependency_timed_out(*_: Any) -> None:
        raise TimeoutError("the other side did not answer")

    ((_tp, (msg,)),) = _batch({0: ["a"]}).items()
    runner = _timing_runner(engine, dependency_timed_out)
    envelope, payload = runner._decode(msg.value)
    assert envelope is not None
    with pytest.raises(TimeoutError) as info:
        await runner._apply(envelope, payload)
    assert not isinstance(info.value, HandlerTimeout)
    assert is_dependency_failure(info.value)
    assert await _inbox(engine) == 0


async def test_a_handler_over_its_time_in_a_batch_goes_to_one_message_at_a_time_at_once(
    engine: AsyncEngine,
) -> None:
    """A handler cut off by its time limit held the write lock (SQLite) all that time:
    after the whole fetch is cut off, each partition's messages go one at a time, not
    through a batch of the partition first (which would hold the lock that long again)."""
    apply = probe.make_handler()
    slow_runs: list[int] = []

    async def slow_on_b1(uow: Any, envelope: Envelope, payload: Any) -> None:
        if payload.key == "b" and payload.seq == 1:
            slow_runs.append(1)
            await asyncio.sleep(5)
        await apply(uow, envelope, payload)

    batch = _batch({0: ["a", "a"], 1: ["b", "b", "b"]})
    runner = _runner(engine, list(batch), slow_on_b1, handler_timeout_s=0.05)
    dead: list[str] = []

    async def dead_letter(msg: Any, reason: str, detail: str) -> None:
        dead.append(f"{msg.partition}@{msg.offset}:{reason}")

    runner._dead_letter = dead_letter  # type: ignore[method-assign]  # no broker here
    await runner._process_batch(_Consumer(), batch)
    # Once in the fetch's batch, once alone (its one attempt): not a third time in a
    # batch of partition 1.
    assert len(slow_runs) == 2
    assert dead == ["1@101:handler_failed"]
    assert sorted((k, s) for _, k, s, _ in await probe.effects(engine)) == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 2),
    ]
