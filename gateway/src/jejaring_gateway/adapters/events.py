"""Live events for the dashboard: one Kafka consumer per gateway, fanned out to clients.

The consumer joins a group of its own (`gateway-live-<instance>`), reads the services'
`.events` topics from the latest offset (a live view, not a history) and never commits.
Each connected client has a bounded queue: a client too slow to keep up loses events
(counted and told), it never makes the gateway hold more memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from jejaring_shared.contracts.topics import (
    CATALOG_EVENTS,
    STOCK_EVENTS,
    SUPPLIER_EVENTS,
    TRANSFER_EVENTS,
)
from jejaring_shared.kafka import ensure_topics, stop_bounded
from jejaring_shared.settings import KafkaSettings

log = logging.getLogger(__name__)
TOPICS = (CATALOG_EVENTS, STOCK_EVENTS, TRANSFER_EVENTS, SUPPLIER_EVENTS)


@dataclass(frozen=True)
class Filters:
    types: tuple[str, ...] = ()
    """Exact types (`transfer.leg_assigned`) or prefixes ending in `*` (`transfer.*`)."""
    outlet: str | None = None
    correlation_id: str | None = None

    @classmethod
    def parse(cls, types: str | None, outlet: str | None, correlation_id: str | None) -> Filters:
        wanted = tuple(t.strip() for t in (types or "").split(",") if t.strip())
        return cls(wanted, outlet or None, correlation_id or None)

    def matches(self, event: dict[str, Any]) -> bool:
        if self.types:
            kind = str(event.get("type", ""))
            if not any(
                kind.startswith(t[:-1]) if t.endswith("*") else kind == t for t in self.types
            ):
                return False
        if self.correlation_id and event.get("correlation_id") != self.correlation_id:
            return False
        return not self.outlet or self.outlet in outlets_of(event)


def outlets_of(event: dict[str, Any]) -> set[str]:
    """The outlets an event concerns, from its payload only: every stock event names its
    outlet there. Not from the key (`outlet:sku`): outlet ids may contain `:`, so the key
    of `bali:ubud`'s events begins `bali:` and would show them to outlet `bali`.

    `outlet_id` names an outlet in every contract; `source_id` only when `source_kind` is
    "outlet" (a supplier's id may equal an outlet's, and a supplier leg is not that
    outlet's business)."""
    payload = event.get("payload") or {}
    if not isinstance(payload, dict):
        return set()
    found = {str(payload["outlet_id"])} if payload.get("outlet_id") else set()
    if payload.get("source_kind") == "outlet" and payload.get("source_id"):
        found.add(str(payload["source_id"]))
    return found


@dataclass(eq=False)
class Subscriber:
    filters: Filters
    queue: asyncio.Queue[dict[str, Any]]
    dropped: int = 0
    owner: str = ""  # the key's id: streams are counted per key
    replaced: bool = False

    def replace(self) -> None:
        """End this stream for a newer one of the same key: wakes its reader, which may be
        a half-open link the server never heard close (it would hold its place for good)."""
        self.replaced = True
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(REPLACED)


REPLACED: dict[str, Any] = {"replaced": True}  # the marker a replaced stream's reader wakes on


@dataclass
class EventHub:
    kafka: KafkaSettings
    client_queue: int = 1000
    replay: int = 200
    group_id: str = field(default_factory=lambda: f"gateway-live-{uuid.uuid4().hex[:12]}")
    subscribers: dict[Subscriber, None] = field(default_factory=dict)  # ordered, oldest first
    recent: deque[dict[str, Any]] = field(default_factory=deque)
    ready: bool = False
    connected: bool = False
    received: int = 0
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=max(self.replay, 1))

    # -- fan-out -----------------------------------------------------------------------
    def subscribe(self, filters: Filters, owner: str = "") -> Subscriber:
        sub = Subscriber(filters, asyncio.Queue(maxsize=self.client_queue), owner=owner)
        self.subscribers[sub] = None
        return sub

    def streams_of(self, owner: str) -> list[Subscriber]:
        """The key's streams, oldest first."""
        return [s for s in self.subscribers if s.owner == owner and not s.replaced]

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.pop(sub, None)

    def backlog(self, filters: Filters, n: int) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        return [e for e in self.recent if filters.matches(e)][-n:]

    def publish(self, event: dict[str, Any]) -> None:
        self.received += 1
        if self.replay:
            self.recent.append(event)
        for sub in list(self.subscribers):
            if not sub.filters.matches(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1

    # -- the consumer ------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 6.0)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._consume()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = self.ready = False
                log.warning("live events: consumer failed (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _consume(self) -> None:
        with contextlib.suppress(Exception):
            await ensure_topics(self.kafka, TOPICS)
        consumer = AIOKafkaConsumer(
            *TOPICS,
            bootstrap_servers=self.kafka.bootstrap_servers,
            group_id=self.group_id,
            client_id=self.group_id,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
            request_timeout_ms=int(max(40.0, self.kafka.request_timeout_s) * 1000),
            metadata_max_age_ms=30_000,
        )
        try:
            await asyncio.wait_for(consumer.start(), self.kafka.request_timeout_s)
            self.connected = True
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                if not self.ready:
                    assigned = consumer.assignment()
                    if assigned:
                        for tp in assigned:  # resolve "latest" now: events from here on
                            await consumer.position(tp)
                        self.ready = True
                for messages in batch.values():
                    for record in messages:
                        event = decode(record.value)
                        if event is not None:
                            self.publish(event)
        finally:
            self.connected = self.ready = False
            await stop_bounded(consumer, 4.0)

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "ready": self.ready,
            "group_id": self.group_id,
            "clients": len(self.subscribers),
            "received": self.received,
        }


def decode(raw: bytes | None) -> dict[str, Any] | None:
    """The envelope's public fields, or None for what is not an event."""
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or "type" not in body:
        return None
    return {
        k: body.get(k)
        for k in ("id", "type", "source", "occurred_at", "key", "correlation_id", "payload")
    }


def sse(event: dict[str, Any]) -> bytes:
    return f"id: {event.get('id')}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def sse_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def sse_notice(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def as_types(values: Iterable[str]) -> str:
    return ",".join(values)
