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
import zlib
from datetime import timedelta

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .contracts import utcnow
from .db import is_sqlite
from .kafka import make_producer, start_bounded, stop_bounded
from .metrics import BackboneMetrics
from .settings import KafkaSettings
from .tables import OutboxRecord

log = logging.getLogger(__name__)
_OUTBOX: sa.Table = OutboxRecord.__table__  # type: ignore[attr-defined]
_T = _OUTBOX.c


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        kafka: KafkaSettings,
        *,
        name: str,
        metrics: BackboneMetrics,
        batch_size: int = 500,
        idle_poll_s: float = 0.5,
        max_backoff_s: float = 5.0,
        retention: timedelta = timedelta(days=3),
    ) -> None:
        self._engine = engine
        self._kafka = kafka
        self._name = name
        self._metrics = metrics
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._max_backoff_s = max_backoff_s
        self._retention = retention
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._leader_conn: AsyncConnection | None = None
        self._last_prune = 0.0
        self._producer_lock = asyncio.Lock()
        self.kafka_ok = False
        """True after the last attempt to reach Kafka succeeded."""

    def wake(self) -> None:
        """Called after a commit that wrote events: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._name}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        await self._drop_producer()
        await self._release_leadership()

    async def backlog(self) -> int:
        async with self._engine.connect() as conn:
            n = await conn.scalar(
                sa.select(sa.func.count()).select_from(_OUTBOX).where(_T.published_at.is_(None))
            )
        return int(n or 0)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                sent = await self.publish_batch()
                backoff = 0.1
                if sent < self._batch_size:
                    await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.kafka_ok = False
                self._metrics.outbox_publish_errors.inc()
                log.warning("outbox relay %s: %s; retrying in %.1fs", self._name, exc, backoff)
                # A producer that failed mid-flight may be wedged (aiokafka #1017): rebuild it.
                await self._drop_producer()
                await self._release_leadership()
                await self._sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
        self._wake.clear()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def publish_batch(self) -> int:
        """Publish up to one batch of pending events; return how many were published."""
        if not await self._is_leader():
            return 0
        # A short read transaction: nothing is held open while we talk to Kafka.
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(_T.id, _T.topic, _T.key, _T.type, _T.event_id, _T.body)
                    .where(_T.published_at.is_(None))
                    .order_by(_T.id)
                    .limit(self._batch_size)
                )
            ).all()
        if not rows:
            self._metrics.outbox_backlog.set(0)
            await self._maybe_prune()
            return 0
        producer = await self._ensure_producer()
        timeout = self._kafka.request_timeout_s

        async def send_all() -> None:
            futures = [
                await producer.send(
                    r.topic,
                    value=r.body.encode(),
                    key=r.key.encode(),
                    headers=[("event_type", r.type.encode()), ("event_id", r.event_id.encode())],
                )
                for r in rows
            ]
            await asyncio.gather(*futures)

        await asyncio.wait_for(send_all(), timeout)
        self.kafka_ok = True
        ids = [r.id for r in rows]
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(_OUTBOX).where(_T.id.in_(ids)).values(published_at=utcnow())
            )
        self._metrics.outbox_published.inc(len(rows))
        if len(rows) < self._batch_size:
            self._metrics.outbox_backlog.set(0)
        else:
            self._metrics.outbox_backlog.set(await self.backlog())
        return len(rows)

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
            return True
        conn = await self._engine.connect()
        try:
            lock_key = zlib.crc32(f"jejaring-outbox-relay:{self._name}".encode())
            got = await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key})
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if got:
            self._leader_conn = conn
            return True
        await conn.close()
        return False

    async def _release_leadership(self) -> None:
        conn, self._leader_conn = self._leader_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _maybe_prune(self) -> None:
        """Published events are kept a while for audit, then deleted."""
        now = asyncio.get_running_loop().time()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(_OUTBOX).where(_T.published_at < utcnow() - self._retention)
            )
