"""Plain Kafka clients for tests: read a topic back, send raw bytes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from jejaring_shared.contracts import REGISTRY, Envelope

ROOT = Path(__file__).resolve().parents[2]


async def send_raw(bootstrap: str, topic: str, items: list[tuple[bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
    """Read a topic from the beginning until `expect` messages arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < expect and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                out.extend(messages)
    finally:
        await consumer.stop()
    return out


def assert_matches_asyncapi(raw: bytes) -> Envelope:
    """The message as read from Kafka against the published document and the pydantic model."""
    doc = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    body = json.loads(raw)
    names = {m["name"]: key for key, m in doc["components"]["messages"].items()}
    schema = {
        "$ref": f"#/components/messages/{names[body['type']]}/payload",
        "components": doc["components"],
    }
    jsonschema.Draft202012Validator(schema).validate(body)
    envelope = Envelope.model_validate(body)
    REGISTRY.get(envelope.type).model.model_validate(envelope.payload)
    return envelope
