"""Every service app: health, readiness, metrics, AsyncAPI and JSON errors (no Kafka)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_catalog.entrypoints.app import create_app as catalog_app
from jejaring_shared.app import create_service_app
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
