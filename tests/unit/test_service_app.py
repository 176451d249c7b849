"""Every service app: health, readiness, metrics, AsyncAPI and JSON errors (no Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_catalog.entrypoints.app import create_app as catalog_app
from jejaring_shared.app import Runtime, create_service_app
from jejaring_shared.tasks import finish
from jejaring_stock.entrypoints.app import create_app as stock_app
from jejaring_supplier.entrypoints.app import create_app as supplier_app
from jejaring_transfer.entrypoints.app import create_app as transfer_app
from support import probe


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # Kafka is unreachable on purpose: the service must still start and take writes.
    app = create_service_app(
        probe.definition(),
        probe.settings(f"sqlite+aiosqlite:///{tmp_path}/p.db", "127.0.0.1:1"),
    )
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_health_and_readiness_report_kafka_down(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    resp = await client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["kafka"] == "unavailable"


async def test_writes_succeed_while_kafka_is_down(client: httpx.AsyncClient) -> None:
    resp = await client.post("/things", json=[{"key": "a", "seq": 1}, {"key": "a", "seq": 2}])
    assert resp.status_code == 201
    ready = (await client.get("/readyz")).json()
    assert ready["checks"]["outbox_backlog"] == 2
    metrics = (await client.get("/metrics")).text
    assert "jejaring_outbox_backlog" in metrics
    assert "jejaring_consumer_dead_lettered_total" in metrics


async def test_validation_errors_name_the_field_and_change_nothing(
    client: httpx.AsyncClient,
) -> None:
    resp = await client.post("/things", json=[{"key": "a", "seq": -1}])
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "too_small" and err["field"] == "0.seq"
    resp = await client.post("/things", json=[{"key": "a", "seq": 1, "id": 5}])
    assert resp.json()["error"] == {
        "code": "unknown_field",
        "message": "Extra inputs are not permitted",
        "field": "0.id",
    }
    assert (await client.get("/readyz")).json()["checks"]["outbox_backlog"] == 0


async def test_unknown_route_is_a_json_error(client: httpx.AsyncClient) -> None:
    resp = await client.get("/nope")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("url", ["/things%00", "/nope?key=a%00b", "/healthz?x=%00"])
async def test_a_nul_in_the_url_is_refused_before_any_route(
    client: httpx.AsyncClient, url: str
) -> None:
    """PostgreSQL stores no NUL in text: an id or filter carrying one failed in the
    database, answered as an outage (503)."""
    resp = await client.get(url)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid"


async def test_database_refusals_are_told_apart_on_each_database(db_url: str) -> None:
    """Real errors of each driver, as the error handlers see them: a value no column holds
    is a 422 (a 503 had clients retry it for ever; asyncpg's come as a plain DBAPIError
    with a class-22 SQLSTATE), a unique key taken meanwhile a 409, another constraint a
    500 (a bug, not an outage), the database down a 503."""
    from sqlalchemy.exc import OperationalError

    from jejaring_shared.db import create_engine
    from jejaring_shared.errors import install_error_handlers

    engine = create_engine(db_url)
    pg = engine.dialect.name == "postgresql"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER CHECK (n >= 0), s TEXT)")
        )
    app = FastAPI()
    install_error_handlers(app)

    async def insert(**row: Any) -> None:
        values = {"id": 1, "n": 0, "s": "x", **row}
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (id, n, s) VALUES (:id, :n, :s)"), values)

    @app.get("/{case}")
    async def route(case: str) -> None:
        if case == "taken":
            await insert(id=7)
            await insert(id=7)
        elif case == "negative":
            await insert(id=8, n=-1)
        elif case == "too_big":
            await insert(id=9, n=3_000_000_000 if pg else 2**70)
        elif case == "nul":
            await insert(id=10, s="a\x00b")
        elif case == "ours":
            raise OverflowError("date value out of range")  # our own arithmetic: a bug
        else:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    got = {}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for case in ("taken", "negative", "too_big", "nul", "ours", "down"):
                resp = await c.get(f"/{case}")
                error = resp.json()["error"] if resp.status_code >= 400 else {"code": None}
                got[case] = (resp.status_code, error["code"])
    finally:
        await engine.dispose()
    assert got["taken"] == (409, "conflict")
    assert got["negative"] == (500, "internal_error")
    assert got["too_big"] == (422, "unstorable_value")
    # SQLite stores a NUL in text; PostgreSQL refuses it (22021).
    assert got["nul"] == ((422, "unstorable_value") if pg else (200, None))
    assert got["ours"] == (500, "internal_error")
    assert got["down"] == (503, "database_unavailable")


@pytest.mark.parametrize("factory", [catalog_app, stock_app, transfer_app, supplier_app])
async def test_each_service_starts_migrates_and_serves_its_catalog(
    factory: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JEJARING_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("JEJARING_KAFKA_REQUEST_TIMEOUT_S", "1")
    for svc in ("CATALOG", "STOCK", "TRANSFER", "SUPPLIER"):
        monkeypatch.setenv(f"JEJARING_{svc}_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/s.db")
    app: FastAPI = factory()  # type: ignore[operator]
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/healthz")).status_code == 200
            doc = (await c.get("/asyncapi.json")).json()
            assert "stock.reserved" in {m["name"] for m in doc["components"]["messages"].values()}


async def test_finish_never_raises_the_tasks_outcome() -> None:
    async def sleeper() -> None:
        await asyncio.sleep(60)

    async def failing() -> None:
        raise RuntimeError("boom")

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)  # ignores the first request to stop
        await asyncio.sleep(60)

    cancelled = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    cancelled.cancel()
    await finish(cancelled, 1.0)  # the task ends cancelled: that is how it was asked to stop
    assert cancelled.cancelled()
    failed = asyncio.create_task(failing())
    await finish(failed, 1.0)
    assert failed.done()
    slow = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    slow.cancel()
    await finish(slow, 0.05)  # overruns: cancelled once more, which it does not swallow
    assert slow.done()


async def test_a_service_with_background_tasks_still_stops_its_relay_and_consumers(
    tmp_path: Path,
) -> None:
    """Background tasks are cancelled first; that must not cut the rest of the shutdown
    short (consumers leave their group, the relay stops, the engine is disposed)."""

    async def background(runtime: Runtime) -> None:
        await asyncio.sleep(3600)

    definition = dataclasses.replace(probe.definition(), background=[background])
    app = create_service_app(
        definition, probe.settings(f"sqlite+aiosqlite:///{tmp_path}/p.db", "127.0.0.1:1")
    )
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        runtime: Runtime = app.state.runtime
        assert runtime.consumers
    assert runtime.relay._stopping.is_set()
    assert all(r._stopping.is_set() for r in runtime.consumers)
    assert runtime.relay._task is not None and runtime.relay._task.done()


async def test_readiness_reports_a_relay_failing_and_a_consumer_silent_for_long(
    tmp_path: Path,
) -> None:
    """Kafka reachable and the database up are not enough: a relay failing every round (a
    row the broker refuses, a bug) or a consumer no longer polling would leave events
    unpublished or unapplied while the service said it was ready."""
    app = create_service_app(
        probe.definition(),
        probe.settings(f"sqlite+aiosqlite:///{tmp_path}/p.db", "127.0.0.1:1"),
    )
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        runtime: Runtime = app.state.runtime

        async def kafka_up(timeout_s: float = 2.0) -> bool:
            return True

        runtime.relay.check_kafka = kafka_up  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            # Stopped, so their own loops (failing: Kafka is not there) set nothing meanwhile.
            await runtime.relay.stop()
            [consumer] = runtime.consumers
            await consumer.stop()
            now = asyncio.get_running_loop().time()
            consumer.last_poll = consumer.last_progress = now  # got through a fetch just now
            runtime.relay.failing_since = None
            resp = await client.get("/readyz")
            assert resp.status_code == 200, resp.text
            assert resp.json()["checks"]["relay"] == "ok"

            runtime.relay.failing_since = asyncio.get_running_loop().time() - 200
            runtime.relay.failing_since -= 100  # past the 180 s
            runtime.relay.last_error = "MessageSizeTooLargeError()"
            resp = await client.get("/readyz")
            assert resp.status_code == 503
            relay = resp.json()["checks"]["relay"]
            assert relay.startswith("failing for 3") and "MessageSizeTooLarge" in relay

            # A consumer that polls but fails the same fetch again and again (its dead
            # letters cannot be sent, its commits fail) does not get through.
            runtime.relay.failing_since = None
            consumer.last_progress -= 300
            resp = await client.get("/readyz")
            assert resp.status_code == 503
            seen = resp.json()["checks"]["consumers"][consumer.group_id]
            assert seen["progressed_s_ago"] >= 300 and seen["polled_s_ago"] < 5
