"""The outbox relay: publishes committed events to Kafka, in order, at least once.

Events were written to the `outbox` table in the same transaction as the state change
(see db.UnitOfWork). The relay reads them in id order, sends them with an idempotent
producer (acks=all), and marks them published. While Kafka is down it backs off and
retries; writes keep succeeding because they only touch the database. Consumers
de-duplicate by event id, so a resend after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .contracts import utcnow
from .db import is_sqlite, read_connection, write_lock
from .kafka import key_partition, make_producer, start_bounded, stop_bounded
from .metrics import BackboneMetrics
from .settings import KafkaSettings
from .tables import OutboxRecord
from .tasks import finish, sleep_unless

log = logging.getLogger(__name__)
_OUTBOX: sa.Table = OutboxRecord.__table__  # type: ignore[attr-defined]
_T = _OUTBOX.c
_LEADER_CHECK_S = 0.5
"""How often the leader checks that its lock's connection is still there (at most)."""


PRUNE_CHUNK = 1_000
PRUNE_BUDGET_S = 2.0
"""Rows deleted per transaction, and how long a pruning round (once a minute) may go on
taking full chunks: enough for thousands of events a second, the write lock free between
chunks."""


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        kafka: KafkaSettings,
        *,
        name: str,
        metrics: BackboneMetrics,
        batch_size: int = 1000,
        pipeline_depth: int = 3,
        idle_poll_s: float = 0.5,
        max_backoff_s: float = 5.0,
        retention: timedelta = timedelta(days=3),
    ) -> None:
        self._engine = engine
        self._kafka = kafka
        self._name = name
        self._metrics = metrics
        self._batch_size = batch_size
        self._pipeline_depth = pipeline_depth
        self._idle_poll_s = idle_poll_s
        self._max_backoff_s = max_backoff_s
        self._retention = retention
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._leader_conn: AsyncConnection | None = None
        self._leader_checked = 0.0
        self._lock_key = zlib.crc32(f"jejaring-outbox-relay:{name}".encode())
        self._last_prune = 0.0
        self._producer_lock = asyncio.Lock()
        self.kafka_ok = False
        """True after the last attempt to reach Kafka succeeded."""
        self.failing_since: float | None = None
        """Monotonic time of the first of the rounds failing in a row (None: the last
        round went through); readiness reports a relay failing for long."""
        self.last_error = ""

    def wake(self) -> None:
        """Called after a commit that wrote events: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._name}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        await finish(self._task, timeout_s)
        await self._drop_producer()
        await self._release_leadership()

    async def backlog(self) -> int:
        async with read_connection(self._engine) as conn:
            n = await conn.scalar(
                sa.select(sa.func.count()).select_from(_OUTBOX).where(_T.published_at.is_(None))
            )
        return int(n or 0)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                await self.publish_pending()
                backoff = 0.1
                self.failing_since = None
                await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.kafka_ok = False
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.last_error = repr(exc)[:200]
                self._metrics.outbox_publish_errors.inc()
                with contextlib.suppress(Exception):  # the database may be down too
                    self._metrics.outbox_backlog.set(await self.backlog())
                log.warning("outbox relay %s: %s; retrying in %.1fs", self._name, exc, backoff)
                # A producer that failed mid-flight may be wedged (aiokafka #1017): rebuild it.
                await self._drop_producer()
                await self._release_leadership()
                await sleep_unless(self._stopping, backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _idle(self) -> None:
        await sleep_unless(self._wake, self._idle_poll_s)
        self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish what is pending, up to `pipeline_depth` batches in flight at once.

        While one batch waits for Kafka's acknowledgements the next is read and sent, so
        the database and the broker work at the same time. Batches go out in id order
        through one idempotent producer, which keeps each partition (key) in order. A batch
        is marked published only after all its sends were acknowledged.
        """
        await self._maybe_prune()
        if not await self._is_leader():
            self._metrics.outbox_backlog.set(await self.backlog())
            return 0
        timeout = self._kafka.request_timeout_s
        inflight: deque[asyncio.Task[int]] = deque()
        cursor, total, full = 0, 0, True
        try:
            while full or inflight:
                rows = await self._read_after(cursor) if full else []
                full = len(rows) == self._batch_size
                if rows:
                    producer = await self._ensure_producer()
                    async with asyncio.timeout(timeout):
                        sends = await self._send(producer, rows)
                    ids = [r.id for r in rows]
                    inflight.append(asyncio.create_task(self._complete(ids, sends)))
                    cursor = rows[-1].id
                if inflight and (not full or len(inflight) >= self._pipeline_depth):
                    total += await inflight.popleft()
        finally:
            for task in inflight:
                task.cancel()
        self._metrics.outbox_backlog.set(0)  # caught up, as of the last read
        return total

    async def _complete(self, ids: list[int], sends: list[Any]) -> int:
        """Wait for a batch's acknowledgements, then mark it published (while the next
        batches are read and sent)."""
        async with asyncio.timeout(self._kafka.request_timeout_s):
            await asyncio.gather(*sends)
        self.kafka_ok = True
        await self._mark_published(ids)
        self._metrics.outbox_published.inc(len(ids))
        return len(ids)

    async def _read_after(self, cursor: int) -> Sequence[Any]:
        # A short read: nothing is held open while we talk to Kafka.
        async with read_connection(self._engine) as conn:
            return (
                await conn.execute(
                    sa.select(_T.id, _T.topic, _T.key, _T.type, _T.event_id, _T.body)
                    .where(_T.published_at.is_(None), _T.id > cursor)
                    .order_by(_T.id)
                    .limit(self._batch_size)
                )
            ).all()

    @staticmethod
    async def _send(producer: AIOKafkaProducer, rows: Sequence[Any]) -> list[Any]:
        """Queue a batch on the producer (waits only for buffer space); returns ack futures.

        Rows go into one record batch per partition, in id order, instead of one send()
        each: send() cost about 45 us an event (most of a relay's time), a batch append a
        few. Partitions are chosen as the default partitioner does (murmur2 of the key), so
        a key's events land where any other producer would put them.
        """
        batches: dict[tuple[str, int], Any] = {}
        sends: list[Any] = []
        partitions: dict[str, list[int]] = {}
        for r in rows:
            parts = partitions.get(r.topic)
            if parts is None:
                parts = partitions[r.topic] = sorted(await producer.partitions_for(r.topic))
            key = r.key.encode()
            tp = (r.topic, parts[key_partition(key, len(parts))])
            headers = [("event_type", r.type.encode()), ("event_id", r.event_id.encode())]
            value = r.body.encode()
            batch = batches.get(tp)
            if batch is None:
                batch = batches[tp] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # Full: send it and start the next one (order within the partition holds:
                # the producer drains a partition's batches in the order they came). An
                # empty batch takes any record; one the broker finds too large fails the
                # round, as send() refusing it did.
                sends.append(await producer.send_batch(batch, tp[0], partition=tp[1]))
                batch = batches[tp] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        for (topic, partition), batch in batches.items():
            sends.append(await producer.send_batch(batch, topic, partition=partition))
        return sends

    async def _mark_published(self, ids: list[int]) -> None:
        async with write_lock(self._engine), self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One array parameter instead of a thousand expanded ones.
                await conn.execute(
                    sa.text("UPDATE outbox SET published_at = :now WHERE id = ANY(:ids)"),
                    {"now": utcnow(), "ids": ids},
                )
            else:
                await conn.execute(
                    sa.update(_OUTBOX).where(_T.id.in_(ids)).values(published_at=utcnow())
                )

    async def _ensure_producer(self, timeout_s: float | None = None) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = make_producer(self._kafka, client_id=f"{self._name}-relay")
                await start_bounded(producer, timeout_s or self._kafka.request_timeout_s)
                self._producer = producer
            return self._producer

    async def check_kafka(self, timeout_s: float = 2.0) -> bool:
        """Readiness probe: can we reach the cluster right now?"""
        try:
            producer = await self._ensure_producer(timeout_s)
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
        except Exception:
            self.kafka_ok = False
        else:
            self.kafka_ok = True
        return self.kafka_ok

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_bounded(producer, 3.0)

    async def _is_leader(self) -> bool:
        """On PostgreSQL, only one relay per service publishes, so order per key holds
        across replicas. The lock lives on a dedicated connection and dies with it."""
        if is_sqlite(str(self._engine.url)):
            return True
        if self._leader_conn is not None:
            now = asyncio.get_running_loop().time()
            try:  # the lock dies with its connection: make sure it is still there
                raw = await self._leader_conn.get_raw_connection()
                driver = raw.driver_connection
                if driver is None or driver.is_closed():
                    raise ConnectionError("the relay's lock connection was closed")
                if now - self._leader_checked < _LEADER_CHECK_S:
                    # Under load a round follows every commit: asking the server each time
                    # was three round trips a round. A connection the server closed shows
                    # as closed at once (asyncpg reads its socket all the time).
                    return True
                await self._leader_conn.execute(sa.text("SELECT 1"))
                await self._leader_conn.commit()
                self._leader_checked = now
                return True
            except Exception:
                await self._release_leadership()
                raise
        conn = await self._engine.connect()
        try:
            got = await conn.scalar(
                sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self._lock_key}
            )
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if got:
            self._leader_conn = conn
            self._leader_checked = asyncio.get_running_loop().time()
            return True
        await conn.close()
        return False

    async def _release_leadership(self) -> None:
        conn, self._leader_conn = self._leader_conn, None
        if conn is None:
            return
        # The connection goes back to the pool: the session lock must not go with it.
        try:
            await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._lock_key})
            await conn.commit()
        except Exception:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # closes it for real, which releases the lock
        with contextlib.suppress(Exception):
            await conn.close()

    async def _maybe_prune(self) -> None:
        """Published events are kept a while for audit, then deleted."""
        now = asyncio.get_running_loop().time()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        cutoff = utcnow() - self._retention
        # Only the oldest rows by id are looked at, a chunk at a time, each chunk its own
        # short transaction: published_at has no index (only pending rows have one), so a
        # plain DELETE .. WHERE published_at < cutoff read the whole table every minute,
        # on SQLite holding the write lock. Rows are published in id order, so the old
        # ones are at the head; a head that is not old ends the pruning at once.
        budget = now + PRUNE_BUDGET_S
        while asyncio.get_running_loop().time() < budget:
            head = sa.select(_T.id).order_by(_T.id).limit(PRUNE_CHUNK)
            async with write_lock(self._engine), self._engine.begin() as conn:
                done = await conn.execute(
                    sa.delete(_OUTBOX).where(_T.id.in_(head), _T.published_at < cutoff)
                )
            if done.rowcount < PRUNE_CHUNK:
                return
