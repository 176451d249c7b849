"""The event backbone: how fast the outbox relay publishes, and how fast the outbox fills.

backbone.relay_throughput
    N events (~300-byte envelopes of the probe service, 50 keys) are written to the outbox
    through the UnitOfWork first; then an OutboxRelay (the service defaults: batch size,
    idle poll) is started and timed until its published counter reaches N. The counter is
    bumped only after a batch's send futures resolved (acks=all, idempotent producer) and
    its rows were marked published, so at that point the backlog is 0 and every event is
    delivered (checked afterwards). The relay's producer is started (and the cluster
    reached) before the clock starts, through its readiness probe.
    Reference: a bare aiokafka producer from the same make_producer() sending the same N
    payloads (same topic, keys, headers) with send() and gathering the futures.
backbone.outbox_write
    The same N events written through UnitOfWork.publish + commit, 100 per transaction.
    Reference: the same rows inserted with a SQLAlchemy Core executemany, 100 per
    transaction (no envelope building, no ORM).

Each rep: write (UoW) -> relay -> clear -> raw insert -> clear -> bare producer, so the
relay and its reference alternate and share any drift. One smaller warm-up rep first.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness import REPEATS, Context, DbKind, Result, median, timed
from jejaring_shared import migrations
from jejaring_shared.db import UnitOfWorkFactory, create_engine, is_sqlite
from jejaring_shared.kafka import ensure_topics, make_producer, start_bounded, stop_bounded
from jejaring_shared.metrics import BackboneMetrics
from jejaring_shared.outbox import OutboxRelay
from jejaring_shared.settings import KafkaSettings, ServiceSettings
from jejaring_shared.tables import OutboxRecord
from support import probe

N_FULL = 20_000
N_QUICK = 2_000
KEYS = 50
WRITE_BATCH = 100
DRAIN_TIMEOUT_S = 600.0
RELAY_GOAL = 0.5
MIGRATIONS = "support.probe_migrations"
OUTBOX: sa.Table = OutboxRecord.__table__  # type: ignore[attr-defined]

Row = dict[str, Any]


async def run(ctx: Context) -> list[Result]:
    n = N_QUICK if ctx.quick else N_FULL
    warm_n = max(n // 10, 500)
    settings = ServiceSettings(service_name="probe", kafka=ctx.kafka_settings())
    await ensure_topics(settings.kafka, [probe.PROBE_TOPIC])
    results: list[Result] = []
    for db in ctx.dbs:
        results += await _bench_db(ctx, db, settings, n, warm_n)
    return results


async def _bench_db(
    ctx: Context, db: DbKind, settings: ServiceSettings, n: int, warm_n: int
) -> list[Result]:
    engine = create_engine(await ctx.database_url(db, "backbone"))
    try:
        await migrations.upgrade(engine, MIGRATIONS)
        uow = UnitOfWorkFactory(engine, source="probe", registry=probe.REGISTRY)
        rates: dict[str, list[float]] = defaultdict(list)
        extra: dict[str, list[float]] = defaultdict(list)
        for rep in range(REPEATS + 1):
            size = warm_n if rep == 0 else n
            label = f"{db} warm-up" if rep == 0 else f"{db} run {rep}/{REPEATS}"
            await _clear(engine)

            ctx.status(f"{label}: writing {size:,} events through the UnitOfWork")
            t_write = await timed(functools.partial(_write_uow, uow, size))
            rows = await _snapshot(engine)
            if len(rows) != size:
                raise AssertionError(f"outbox holds {len(rows)} rows, expected {size}")

            ctx.status(f"{label}: relay publishing {size:,} events")
            t_relay, errors = await _drain_with_relay(engine, settings, size)

            await _clear(engine)
            ctx.status(f"{label}: raw executemany of {size:,} rows")
            t_raw = await timed(functools.partial(_insert_raw, engine, rows))
            await _clear(engine)

            ctx.status(f"{label}: bare producer sending {size:,} events")
            t_bare = await _send_bare(settings.kafka, rows)

            if rep == 0:
                continue
            rates["write"].append(size / t_write)
            rates["raw"].append(size / t_raw)
            rates["relay"].append(size / t_relay)
            rates["bare"].append(size / t_bare)
            extra["relay_errors"].append(errors)
    finally:
        await engine.dispose()

    relay, bare = median(rates["relay"]), median(rates["bare"])
    write, raw = median(rates["write"]), median(rates["raw"])
    common = {"db": db, "n": n, "repeats": REPEATS}
    ratio = relay / bare
    return [
        Result(
            name="backbone.relay_throughput",
            value=relay,
            unit="events/s",
            reference="bare aiokafka producer",
            reference_value=bare,
            ratio=ratio,
            goal=f">= {RELAY_GOAL}x bare aiokafka",
            met=ratio >= RELAY_GOAL,
            extra={
                **common,
                "batch_size": settings.relay_batch_size,
                "keys": KEYS,
                "samples": rates["relay"],
                "reference_samples": rates["bare"],
                "run_ratios": [r / b for r, b in zip(rates["relay"], rates["bare"], strict=True)],
                "relay_publish_errors": sum(extra["relay_errors"]),
                "note": (
                    "timed from relay.start() until every event is acknowledged (acks=all, "
                    "idempotent) and marked published; reference: make_producer() sending the "
                    "same payloads with send() and gathering the futures; both producers are "
                    "started before timing"
                ),
            },
        ),
        Result(
            name="backbone.outbox_write",
            value=write,
            unit="events/s",
            reference="raw executemany insert",
            reference_value=raw,
            ratio=write / raw,
            goal="informational (no goal)",
            met=None,
            extra={
                **common,
                "per_transaction": WRITE_BATCH,
                "samples": rates["write"],
                "reference_samples": rates["raw"],
                "note": (
                    f"UnitOfWork.publish + commit, {WRITE_BATCH} events per transaction, vs the "
                    f"same pre-built rows inserted with a SQLAlchemy Core executemany, "
                    f"{WRITE_BATCH} per transaction"
                ),
            },
        ),
    ]


async def _clear(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if is_sqlite(str(engine.url)):
            await conn.execute(sa.text("DELETE FROM outbox"))
        else:
            await conn.execute(sa.text("TRUNCATE outbox"))


async def _write_uow(uow: UnitOfWorkFactory, size: int) -> None:
    for first in range(0, size, WRITE_BATCH):
        async with uow() as unit:
            for i in range(first, min(size, first + WRITE_BATCH)):
                key = f"k{i % KEYS}"
                unit.publish(probe.ThingHappened(key=key, seq=i // KEYS), key=key)
            await unit.commit()


async def _snapshot(engine: AsyncEngine) -> list[Row]:
    """The outbox rows (without id and published_at), in publishing order."""
    t = OUTBOX
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.select(t.c.event_id, t.c.topic, t.c.key, t.c.type, t.c.body, t.c.created_at)
            .where(t.c.published_at.is_(None))
            .order_by(t.c.id)
        )
        return [dict(r._mapping) for r in result]


async def _insert_raw(engine: AsyncEngine, rows: list[Row]) -> None:
    stmt = sa.insert(OUTBOX)
    for first in range(0, len(rows), WRITE_BATCH):
        async with engine.begin() as conn:
            await conn.execute(stmt, rows[first : first + WRITE_BATCH])


def _published(metrics: BackboneMetrics) -> float:
    return metrics.registry.get_sample_value("jejaring_outbox_published_total") or 0.0


async def _drain_with_relay(
    engine: AsyncEngine, settings: ServiceSettings, size: int
) -> tuple[float, float]:
    """Seconds from relay.start() until `size` events are published; and its error count."""
    metrics = BackboneMetrics("probe")
    relay = OutboxRelay(
        engine,
        settings.kafka,
        name="probe",
        metrics=metrics,
        batch_size=settings.relay_batch_size,
        idle_poll_s=settings.relay_idle_poll_s,
        max_backoff_s=settings.relay_max_backoff_s,
    )
    try:
        if not await relay.check_kafka(settings.kafka.request_timeout_s):
            raise RuntimeError("the relay cannot reach Kafka")
        start = time.perf_counter()
        relay.start()
        deadline = start + DRAIN_TIMEOUT_S
        while _published(metrics) < size:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"relay published {_published(metrics):.0f}/{size} events")
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
    finally:
        await relay.stop()
    backlog = await relay.backlog()
    if backlog:
        raise AssertionError(f"relay done but backlog is {backlog}")
    errors = metrics.registry.get_sample_value("jejaring_outbox_publish_errors_total") or 0.0
    return elapsed, errors


async def _send_bare(kafka: KafkaSettings, rows: list[Row]) -> float:
    """Seconds a bare producer takes to send the rows and have every send acknowledged."""
    messages = [
        (
            r["topic"],
            r["body"].encode(),
            r["key"].encode(),
            [("event_type", r["type"].encode()), ("event_id", r["event_id"].encode())],
        )
        for r in rows
    ]
    producer = make_producer(kafka, client_id="bench-bare")
    await start_bounded(producer, kafka.request_timeout_s)
    try:
        start = time.perf_counter()
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for topic, value, key, headers in messages
        ]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await stop_bounded(producer, 5.0)
