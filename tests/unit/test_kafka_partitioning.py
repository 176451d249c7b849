"""The relay's record batches: partitions as aiokafka's default partitioner picks them,
and order within a partition across batches that fill up."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from jejaring_shared.kafka import key_partition
from jejaring_shared.outbox import OutboxRelay


@given(key=st.binary(min_size=0, max_size=80), count=st.integers(min_value=1, max_value=64))
def test_a_key_goes_where_the_default_partitioner_sends_it(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert key_partition(key, count) == DefaultPartitioner()(key, partitions, partitions)


class _Batch:
    """aiokafka's BatchBuilder as the relay uses it: append returns None once full (an
    empty batch takes any record)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []

    def append(
        self, *, key: bytes, value: bytes, timestamp: None, headers: list[tuple[str, bytes]]
    ) -> object | None:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value, headers))
        return object()


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[Any]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> _Batch:
        return _Batch(room=3)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_full_batches_are_sent_and_each_partition_keeps_the_rows_order() -> None:
    rows = [
        SimpleNamespace(
            topic="t", key=f"k{i % 5}", type="x.happened", event_id=f"e{i}", body=f"{i}"
        )
        for i in range(40)
    ]
    producer = _Producer()
    sends = await OutboxRelay._send(producer, rows)
    assert len(sends) == len(producer.sent)
    by_partition: dict[int, list[int]] = {}
    batches: dict[int, int] = {}
    for topic, partition, records in producer.sent:
        assert topic == "t"
        batches[partition] = batches.get(partition, 0) + 1
        for key, value, headers in records:
            assert partition == key_partition(key, 3)
            assert dict(headers)["event_type"] == b"x.happened"
            by_partition.setdefault(partition, []).append(int(value))
    sent = sorted(n for ns in by_partition.values() for n in ns)
    assert sent == list(range(40))  # every row once
    for partition, ns in by_partition.items():
        assert ns == sorted(ns), f"partition {partition} out of order"
    assert max(batches.values()) > 1  # some partition filled a batch and went on
