"""The consumer runner: apply each event once, commit offsets after the database.

For every message: parse the envelope, look up its handler, and run the handler in a unit
of work that also writes (consumer group, event id) to the inbox. Only after that commit is
the offset committed, so a crash in between means redelivery, and the inbox turns the
redelivery into a no-op. What cannot be handled (not JSON, unknown type, invalid payload, a
handler that keeps failing) goes to the group's dead-letter topic with the reason and the
original headers, and the runner moves on. Infrastructure failures (database or Kafka
unreachable) are retried without dead-lettering: nothing is lost while a dependency is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import col

from .contracts import REGISTRY, Envelope, EventRegistry, Payload, utcnow
from .contracts.topics import dead_letter_topic
from .db import UnitOfWork, UnitOfWorkFactory, is_conflict, upsert_insert
from .kafka import make_producer, start_bounded, stop_bounded
from .metrics import BackboneMetrics
from .settings import KafkaSettings
from .tables import InboxRecord
from .tasks import finish, sleep_unless

log = logging.getLogger(__name__)
_INBOX: sa.Table = InboxRecord.__table__  # type: ignore[attr-defined]

Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]
"""async def handle(uow, envelope, payload) -> None; must not commit (the runner does)."""


class HandlerTimeout(Exception):
    """The handler overran its bound: a fault of the message's handling, not a dependency."""


class _Poison(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def is_dependency_failure(exc: BaseException) -> bool:
    """Failures of a dependency rather than of the message: retry, never dead-letter."""
    if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
        return bool(exc.connection_invalidated) or isinstance(exc, sa.exc.OperationalError)
    return isinstance(exc, ConnectionError | OSError | KafkaError)


class ConsumerRunner:
    def __init__(
        self,
        *,
        group_id: str,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        uow_factory: UnitOfWorkFactory,
        kafka: KafkaSettings,
        metrics: BackboneMetrics,
        registry: EventRegistry = REGISTRY,
        max_attempts: int = 5,
        max_batch: int = 200,
        retry_backoff_s: float = 0.2,
        handler_timeout_s: float | None = None,
        inbox_retention: timedelta = timedelta(days=14),
        after_db_commit: Callable[[Envelope], None] | None = None,
    ) -> None:
        self.group_id = group_id
        self.topics = list(topics)
        self.dlq_topic = dead_letter_topic(group_id)
        self._handlers = dict(handlers)
        self._uows = uow_factory
        self._kafka = kafka
        self._metrics = metrics
        self._registry = registry
        self._max_attempts = max_attempts
        self._max_batch = max_batch
        self._retry_backoff_s = retry_backoff_s
        # On SQLite a handler's unit of work holds the process's write lock, which other
        # writers wait 30 s for: its limit must stay well under that. On PostgreSQL a
        # handler may wait for a sku's matching lock held by a long plan approval, and
        # nothing else waits on it: a handler cut off there would be dead-lettered.
        engine = getattr(uow_factory, "engine", None)  # (decoding tests pass none)
        sqlite = engine is None or engine.dialect.name == "sqlite"
        self._handler_timeout_s = handler_timeout_s or (10.0 if sqlite else 30.0)
        self._batch_timed_out = False  # the last batch attempt was cut off (HandlerTimeout)
        self._claim: Any = None
        """The inbox claim statement, built at first use (its INSERT is the dialect's)."""
        self._inbox_retention = inbox_retention
        self._last_prune = 0.0
        self._after_db_commit = after_db_commit  # a seam for fault-injection tests
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.assigned: set[TopicPartition] = set()
        self.last_poll: float = 0.0
        self.last_progress: float = 0.0
        """When the loop last got through: a fetch applied and committed, or nothing to
        fetch. A consumer failing the same fetch again and again still polls; it does not
        progress (readiness watches this)."""
        self._progress = 0  # messages processed, for the stall watchdog
        self._watch: tuple[float, int] = (time.monotonic(), 0)
        self.stall_check_s = 15.0
        self.kafka_ok = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.last_poll = self.last_progress = time.monotonic()  # a stall counts from here
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.group_id}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the message in hand, commit its offset, leave the group; bounded."""
        self._stopping.set()
        await finish(self._task, timeout_s)
        await self._drop_clients()

    async def _drop_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        dlq, self._dlq = self._dlq, None
        self.assigned.clear()
        if consumer is not None:
            await stop_bounded(consumer, 3.0)
        if dlq is not None:
            await stop_bounded(dlq, 2.0)

    async def _ensure_clients(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._kafka.bootstrap_servers,
                group_id=self.group_id,
                client_id=f"{self.group_id}-consumer",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self._kafka.fetch_max_wait_ms,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=2_000,
                max_poll_interval_ms=300_000,
                # A JoinGroup waits for departed members' sessions to expire: a short request
                # timeout would abandon the join, and a rejoin as a new member waits again.
                request_timeout_ms=max(40_000, int(self._kafka.request_timeout_s * 1000)),
            )
            consumer.subscribe(self.topics, listener=_Listener(self))
            try:
                # start() includes joining the group, which may wait for a departed member's
                # session to expire; stop() still cancels it at once.
                await asyncio.wait_for(consumer.start(), 90.0)
            except BaseException:
                await stop_bounded(consumer, 2.0)
                raise
            self._consumer = consumer
        if self._dlq is None:
            dlq = make_producer(self._kafka, client_id=f"{self.group_id}-dlq")
            await start_bounded(dlq, self._kafka.request_timeout_s)
            self._dlq = dlq
        return self._consumer

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            in_batch = False
            try:
                consumer = await self._ensure_clients()
                batch = await consumer.getmany(timeout_ms=200, max_records=self._max_batch)
                self.last_poll = time.monotonic()
                self.kafka_ok = True
                backoff = 0.2
                if batch:
                    # A failure past this point leaves fetched messages uncommitted: the
                    # consumer is rebuilt so they are fetched again from the committed offset.
                    in_batch = True
                    async with self._lock:  # a rebalance waits for the batch to be committed
                        await self._process_batch(consumer, batch)
                    self.last_progress = time.monotonic()
                elif await self._stalled(consumer):
                    raise RuntimeError("no progress while messages are waiting; restarting")
                else:
                    # Idle only: the delete reads the group's inbox (no index on its time),
                    # which on SQLite holds the write lock; quiet hours come every day.
                    self.last_progress = time.monotonic()
                    await self._maybe_prune_inbox()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.kafka_ok = False
                if isinstance(exc, KafkaError) and exc.retriable and not in_batch:
                    # Keep the client (and its group membership); aiokafka recovers itself.
                    log.info("consumer %s: %r; retrying in %.1fs", self.group_id, exc, backoff)
                else:
                    log.warning("consumer %s: %r; restarting in %.1fs", self.group_id, exc, backoff)
                    await self._drop_clients()
                await sleep_unless(self._stopping, backoff)
                backoff = min(backoff * 2, 5.0)

    async def _maybe_prune_inbox(self) -> None:
        """Forget applied ids older than the retention, which must outlast any redelivery
        (Kafka keeps a topic 7 days by default; the inbox keeps ids 14)."""
        now = time.monotonic()
        if now - self._last_prune < 600:
            return
        self._last_prune = now
        cutoff = utcnow() - self._inbox_retention
        try:
            async with self._uows() as uow:
                conn = await uow.session.connection()
                await conn.execute(
                    sa.delete(InboxRecord).where(
                        col(InboxRecord.consumer_group) == self.group_id,
                        col(InboxRecord.applied_at) < cutoff,
                    )
                )
                await uow.commit()
        except Exception:
            # Housekeeping: the database blinking here must not rebuild the consumer (a
            # rebalance of its whole group); next time will do.
            log.warning("consumer %s: pruning the inbox failed", self.group_id, exc_info=True)

    async def _stalled(self, consumer: AIOKafkaConsumer) -> bool:
        """Watchdog: after a whole-cluster restart a consumer may stop fetching without an
        error (aiokafka #703/#1133). If messages wait and none were processed for a while,
        the caller rebuilds the consumer."""
        now = time.monotonic()
        since, seen = self._watch
        if now - since < self.stall_check_s:
            return False
        self._watch = (now, self._progress)
        if self._progress != seen or not self.assigned:
            return False
        timeout = self._kafka.request_timeout_s
        parts = sorted(self.assigned)
        ends = await asyncio.wait_for(consumer.end_offsets(parts), timeout)
        for tp in parts:
            position = await asyncio.wait_for(consumer.position(tp), timeout)
            if ends.get(tp, 0) > position:
                log.warning("consumer %s: stalled on %s at %d", self.group_id, tp, position)
                return True
        return False

    async def _process_batch(
        self, consumer: AIOKafkaConsumer, batch: Mapping[TopicPartition, Sequence[Any]]
    ) -> None:
        # Revoked while we fetched: its new owner will process it.
        mine = {tp: messages for tp, messages in batch.items() if tp in self.assigned}
        together = [msg for messages in mine.values() for msg in messages]
        # Every partition's messages in one unit of work and one offset commit: a
        # transaction and a commit round trip per partition, one after the other, kept the
        # last partition's messages waiting for all the others'. Each partition's messages
        # stay in their order; partitions have no order between them.
        self._batch_timed_out = False
        if len(mine) > 1 and await self._apply_together(together):
            self._progress += len(together)
            await self._commit_done(consumer, {tp: ms[-1].offset + 1 for tp, ms in mine.items()})
            return
        for tp, messages in mine.items():
            done: int | None = None
            if (
                len(messages) > 1
                and not self._batch_timed_out
                and await self._apply_together(messages)
            ):
                self._progress += len(messages)
                done = messages[-1].offset + 1
            else:
                for msg in messages:
                    if self._stopping.is_set() and done is not None:
                        break
                    await self._process(msg)
                    self._progress += 1
                    done = msg.offset + 1
            if done is not None:
                await self._commit_done(consumer, {tp: done})
            if self._stopping.is_set():
                return

    async def _commit_done(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
    ) -> None:
        """Commit offsets the database already holds the effects of, and report the lag."""
        await self._commit(consumer, offsets)
        for tp, done in offsets.items():
            hw = consumer.highwater(tp)
            if hw is not None:
                self._metrics.consumer_lag.labels(self.group_id, tp.topic, tp.partition).set(
                    max(hw - done, 0)
                )

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            async with asyncio.timeout(self._kafka.request_timeout_s):
                await consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance took the partition (aiokafka #929): the new owner gets the
            # messages again and the inbox makes them no-ops.
            log.info("consumer %s: commit after rebalance refused: %s", self.group_id, exc)

    # -- fetched messages together -------------------------------------------------------------

    async def _apply_together(self, messages: Sequence[Any]) -> bool:
        """Apply fetched messages (a batch's, or one partition's) in order in one unit of
        work (one inbox claim, one commit): on SQLite every transaction queues for the one
        write lock, so a transaction per message is what limits a busy consumer. False,
        with nothing applied, when anything goes wrong (a poison message, a failing
        handler, a conflict): the caller then takes smaller steps, down to one message at a
        time with retries and dead letters as usual."""
        started = time.perf_counter()
        try:
            decoded = [self._decode(msg.value) for msg in messages]
        except _Poison:
            return False
        todo = [(e, p) for e, p in decoded if e is not None]
        applied: list[Envelope] = []
        if todo:
            try:
                async with self._uows() as uow:
                    applied = await self._apply_in(uow, todo)
                    await uow.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("consumer %s: batch of %d falls back: %r", self.group_id, len(todo), exc)
                # A handler over its time held the write lock (SQLite) all that time: go to
                # one message at a time at once, not through every smaller batch first.
                self._batch_timed_out = isinstance(exc, HandlerTimeout)
                return False
        per_message = (time.perf_counter() - started) / len(messages)
        for envelope in applied:
            self._metrics.handled.labels(self.group_id, envelope.type, "applied").inc()
            self._metrics.handle_seconds.labels(self.group_id).observe(per_message)
            if self._after_db_commit is not None:
                self._after_db_commit(envelope)
        applied_ids = {e.id for e in applied}
        for envelope, _ in todo:
            if envelope.id not in applied_ids:
                self._metrics.handled.labels(self.group_id, envelope.type, "duplicate").inc()
        ignored = len(decoded) - len(todo)
        if ignored:
            self._metrics.handled.labels(self.group_id, "-", "ignored").inc(ignored)
        return True

    # -- one message -------------------------------------------------------------------------

    async def _process(self, msg: Any) -> None:
        started = time.perf_counter()
        try:
            envelope, payload = self._decode(msg.value)
        except _Poison as poison:
            await self._dead_letter(msg, poison.reason, poison.detail)
            return
        if envelope is None:
            self._metrics.handled.labels(self.group_id, "-", "ignored").inc()
            return
        attempt = 0
        backoff = self._retry_backoff_s
        while True:
            attempt += 1
            try:
                outcome = await self._apply(envelope, payload)
                self._metrics.handled.labels(self.group_id, envelope.type, outcome).inc()
                self._metrics.handle_seconds.labels(self.group_id).observe(
                    time.perf_counter() - started
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.failed.labels(self.group_id, envelope.type).inc()
                if is_dependency_failure(exc):
                    if self._stopping.is_set():
                        raise  # leave uncommitted: redelivered after restart
                    log.warning("consumer %s: dependency down (%s); retrying", self.group_id, exc)
                    attempt = 0
                elif is_conflict(exc):
                    # Not the message's fault: never a reason to dead-letter it.
                    if self._stopping.is_set():
                        raise  # leave uncommitted: redelivered after restart
                    log.info("consumer %s: lost a race (%s); retrying", self.group_id, exc)
                    attempt = 0
                elif attempt >= self._max_attempts:
                    detail = "".join(traceback.format_exception_only(exc)).strip()
                    await self._dead_letter(msg, "handler_failed", detail)
                    return
                else:
                    log.info("consumer %s: attempt %d failed: %s", self.group_id, attempt, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _decode(self, raw: bytes | None) -> tuple[Envelope | None, Payload | None]:
        """Returns (None, None) for a valid event this group does not handle."""
        try:
            envelope = Envelope.from_bytes(raw or b"")
        except ValidationError as exc:
            raise _Poison("unparseable", _first_error(exc)) from None
        except ValueError as exc:
            raise _Poison("unparseable", str(exc)) from None
        if envelope.type not in self._registry:
            raise _Poison("unknown_type", f"no contract for event type {envelope.type!r}")
        if envelope.type not in self._handlers:
            return None, None
        event_type = self._registry.get(envelope.type)
        if envelope.version > event_type.version:
            raise _Poison(
                "unsupported_version",
                f"{envelope.type} v{envelope.version}; this consumer knows v{event_type.version}",
            )
        model = event_type.model
        try:
            payload = model.model_validate(envelope.payload)
        except ValidationError as exc:
            raise _Poison("invalid_payload", _first_error(exc)) from None
        return envelope, payload

    async def _apply(self, envelope: Envelope, payload: Payload | None) -> str:
        async with self._uows() as uow:
            if not await self._apply_in(uow, [(envelope, payload)]):
                return "duplicate"
            await uow.commit()
        if self._after_db_commit is not None:
            self._after_db_commit(envelope)
        return "applied"

    async def _apply_in(
        self, uow: UnitOfWork, todo: Sequence[tuple[Envelope, Payload | None]]
    ) -> list[Envelope]:
        """Run the handlers of the events the inbox has not seen, in order; the caller
        commits. Returns the events applied; the rest were duplicates.

        The ids are claimed in the inbox first, in one statement (INSERT .. ON CONFLICT DO
        NOTHING RETURNING, not a read and then an insert: a statement less per batch,
        which on SQLite holds the write lock). The ids it returns are new to this group;
        the others were applied before, or by a concurrent delivery that PostgreSQL makes
        this statement wait for, and are skipped. A failing handler rolls the claims back
        with everything else."""
        first: dict[str, tuple[Envelope, Payload | None]] = {}
        for envelope, payload in todo:
            first.setdefault(str(envelope.id), (envelope, payload))
        now = utcnow()
        conn = await uow.session.connection()
        if self._claim is None:  # built once (the dialect's INSERT), not per batch
            self._claim = (
                upsert_insert(conn, _INBOX).on_conflict_do_nothing().returning(_INBOX.c.event_id)
            )
        rows = [
            {
                "consumer_group": self.group_id,
                "event_id": event_id,
                "event_type": envelope.type,
                "applied_at": now,
            }
            for event_id, (envelope, _payload) in first.items()
        ]
        claimed = set((await conn.execute(self._claim, rows)).scalars())
        fresh = [item for event_id, item in first.items() if event_id in claimed]
        applied: list[Envelope] = []
        for i, (envelope, payload) in enumerate(fresh):
            handler = self._handlers[envelope.type]
            # Not wait_for: on Python 3.11 it runs the handler as a task of its own, one more
            # trip through the event loop for every message.
            limit = asyncio.timeout(self._handler_timeout_s)
            try:
                async with limit:
                    await handler(uow, envelope, payload)
            except TimeoutError:
                if not limit.expired():
                    raise  # the handler's own (a dependency timing out), not ours
                # TimeoutError is an OSError; keep it from looking like a dependency outage.
                raise HandlerTimeout(f"handler took over {self._handler_timeout_s:g} s") from None
            if i < len(fresh) - 1:
                # The next handler may read through Core, which does not autoflush.
                await uow.session.flush()
            applied.append(envelope)
        return applied

    async def _dead_letter(self, msg: Any, reason: str, detail: str) -> None:
        headers = [
            *(msg.headers or ()),
            ("dlq_reason", reason.encode()),
            ("dlq_error", detail[:2000].encode()),
            ("dlq_group", self.group_id.encode()),
            ("dlq_topic", msg.topic.encode()),
            ("dlq_partition", str(msg.partition).encode()),
            ("dlq_offset", str(msg.offset).encode()),
        ]
        assert self._dlq is not None
        # Must be stored before the offset moves past the message, or it would be lost.
        await asyncio.wait_for(
            self._dlq.send_and_wait(self.dlq_topic, value=msg.value, key=msg.key, headers=headers),
            self._kafka.request_timeout_s,
        )
        self._metrics.dead_lettered.labels(self.group_id, reason).inc()
        log.warning(
            "consumer %s: %s@%d/%d dead-lettered (%s: %s)",
            self.group_id,
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
            detail[:200],
        )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg')}"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._runner._lock:  # wait until the batch in hand is committed
            self._runner.assigned.difference_update(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._runner.assigned.update(assigned)
        log.info("consumer %s: assigned %s", self._runner.group_id, sorted(assigned))
