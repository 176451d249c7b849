"""Helpers for the stock service's tests: settings, a running app, its outbox events."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_shared.settings import KafkaSettings
from jejaring_stock.config import StockSettings
from jejaring_stock.entrypoints.app import create_app


def stock_settings(
    database_url: str, bootstrap: str = "127.0.0.1:1", **extra: Any
) -> StockSettings:
    return StockSettings(
        database_url=database_url,
        kafka=KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0),
        relay_idle_poll_s=0.1,
        **extra,
    )


@asynccontextmanager
async def running_stock(
    settings: StockSettings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stock") as client:
            yield app, client


def new_id(prefix: str = "o") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def outbox_events(app: FastAPI, *, key_prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(type, payload) of every event the service wrote, in order."""
    async with app.state.runtime.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT type, body, key FROM outbox ORDER BY id"))
        return [
            (r.type, json.loads(r.body)["payload"]) for r in rows if r.key.startswith(key_prefix)
        ]


async def make_outlet(client: httpx.AsyncClient, outlet_id: str | None = None) -> str:
    outlet_id = outlet_id or new_id()
    resp = await client.post(
        "/api/v1/outlets",
        json={"id": outlet_id, "name": "Mart", "community": "c1", "region": "r1"},
    )
    assert resp.status_code == 201, resp.text
    return outlet_id


async def receive(
    client: httpx.AsyncClient, outlet_id: str, sku: str, quantity: int, key: str | None = None
) -> None:
    resp = await client.post(
        f"/api/v1/outlets/{outlet_id}/receipts",
        json={
            "idempotency_key": key or new_id("r"),
            "sku": sku,
            "quantity": quantity,
            "source": "distribution_center",
        },
    )
    assert resp.status_code == 201, resp.text


async def level(client: httpx.AsyncClient, outlet_id: str, sku: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/outlets/{outlet_id}/stock/{sku}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body
