"""Kafka client helpers that never hang: every call that can wait forever is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from .settings import KafkaSettings

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=65_536)
def _murmur2(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def key_partition(key: bytes, count: int) -> int:
    """The index of the partition Kafka's default partitioner gives `key` among `count`
    (murmur2, as the Java client and aiokafka do). Cached: keys repeat (outlet:sku), and
    the pure-Python hash cost 11 us a call."""
    return _murmur2(key) % count


def make_producer(kafka: KafkaSettings, *, client_id: str) -> AIOKafkaProducer:
    """Idempotent producer: acks=all, ordered per partition, no duplicates on retry."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        request_timeout_ms=int(kafka.request_timeout_s * 1000),
        max_batch_size=256 * 1024,
        compression_type=None,
    )


async def start_bounded(client: AIOKafkaProducer, timeout_s: float) -> None:
    """Start a client, giving up (and closing it) after timeout_s."""
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except BaseException:
        await stop_bounded(client, 2.0)
        raise


async def stop_bounded(client: object, timeout_s: float) -> None:
    """aiokafka's stop() can wait forever when the broker is gone (#759); never let it."""
    stop = getattr(client, "stop", None) or getattr(client, "close", None)
    if stop is None:
        return
    try:
        await asyncio.wait_for(stop(), timeout_s)
    except (TimeoutError, asyncio.CancelledError):
        log.warning("kafka client did not stop within %.1fs; abandoned", timeout_s)
        await _abandon(client)
    except Exception:
        log.warning("kafka client stop failed", exc_info=True)
        await _abandon(client)


async def _abandon(client: object) -> None:
    """What aiokafka's stop() would have closed after the wait we cut short: a producer's
    stop first waits for its pending batches, which an idempotent producer retries without
    end while the broker is gone, and stop() cannot be called again (it marks itself
    closed first). Left alone, the sender task and the connections live on, reconnecting
    for the whole outage. Best effort, each step bounded (aiokafka's own attributes)."""
    sender = getattr(client, "_sender", None)  # producer
    task = getattr(sender, "sender_task", None)
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
    fail_all = getattr(getattr(client, "_message_accumulator", None), "fail_all", None)
    if fail_all is not None:  # its pending batches: else stop()'s flush waits for ever
        fail_all(KafkaConnectionError("producer abandoned while stopping"))
    for name in ("_fetcher", "client", "_client"):  # consumer's fetcher; the clients
        part = getattr(client, name, None)
        close = getattr(part, "close", None)
        if close is None:
            continue
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(close(), 1.0)


async def ensure_topics(kafka: KafkaSettings, topics: Iterable[str]) -> None:
    """Create topics that do not exist yet (one partition count for all; replication 1)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        request_timeout_ms=int(kafka.request_timeout_s * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), kafka.request_timeout_s)
        existing = set(await asyncio.wait_for(admin.list_topics(), kafka.request_timeout_s))
        missing = sorted(set(topics) - existing)
        if missing:
            # Another service may create it first; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await asyncio.wait_for(
                    admin.create_topics([NewTopic(t, kafka.partitions, 1) for t in missing]),
                    kafka.request_timeout_s,
                )
            log.info("created topics %s", missing)
    finally:
        await stop_bounded(admin, 2.0)
