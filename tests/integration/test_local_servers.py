"""Real Kafka broker and PostgreSQL server (needs Java, Maven or a warm cache, PostgreSQL)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from jejaring_devtools.kafka import KafkaBroker, KafkaError
from jejaring_devtools.postgres import PostgresServer

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value.encode(), key=b"k")
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[str]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[str] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=500)
                got += [m.value.decode() for msgs in batches.values() for m in msgs]
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


def test_broker_survives_restart_and_crash(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    with broker:
        address = broker.bootstrap_servers
        asyncio.run(_produce(address, "demo", ["a", "b", "c"]))
        assert asyncio.run(_consume(address, "demo", "g1", 3)) == ["a", "b", "c"]

        broker.stop()
        assert not broker.is_running()
        broker.start()
        assert broker.bootstrap_servers == address
        asyncio.run(_produce(address, "demo", ["d"]))
        assert asyncio.run(_consume(address, "demo", "g1", 1)) == ["d"]

        broker.kill()
        broker.start()
        assert asyncio.run(_consume(address, "demo", "g2", 4)) == ["a", "b", "c", "d"]

        other = KafkaBroker.attach(tmp_path / "kafka")
        assert other.pid == broker.pid
    assert not broker.is_running()


def test_broker_port_clash_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        broker = KafkaBroker(tmp_path / "kafka", port=sock.getsockname()[1])
        with pytest.raises(KafkaError, match="already in use"):
            broker.start()


def test_postgres_lifecycle(tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "pg") as pg:
        url = pg.create_database("stock")
        assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/stock"
        assert pg.create_database("stock") == url  # idempotent
        out = subprocess.run(
            [str(pg.bindir / "psql"), pg.dsn("stock"), "-tAc", "SHOW fsync"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == "off"
        pg.stop()
        assert not pg.is_running()
        pg.start()
        assert pg.database_exists("stock")
    assert not pg.is_running()
