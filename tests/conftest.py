"""Fixtures shared by every test layer: private Kafka brokers and databases.

Integration tests start their own broker on a free port in a temporary folder, and their
own PostgreSQL server (or use TEST_DATABASE_URL's server when it is set).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

LAYERS = ("unit", "integration", "e2e", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `-m integration` etc. select a layer."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in LAYERS[1:]:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One private broker for the session's tests that do not stop it."""
    from jejaring_devtools.kafka import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[object]:
    """A broker of this test's own, which the test may stop and start again."""
    from jejaring_devtools.kafka import KafkaBroker

    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object | None]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    from jejaring_devtools.postgres import PostgresServer

    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


async def create_pg_database(pg_server: object | None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    base = os.environ.get("TEST_DATABASE_URL")
    if base is None:
        assert pg_server is not None
        url: str = pg_server.create_database(name)  # type: ignore[attr-defined]
        return url
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    server = make_url(base)
    conn = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/test.db"
    else:
        pg = request.getfixturevalue("pg_server")
        yield await create_pg_database(pg)


@pytest.fixture
async def pg_database_url(pg_server: object | None) -> str:
    """A fresh, empty PostgreSQL database (for tests about PostgreSQL only)."""
    return await create_pg_database(pg_server)
