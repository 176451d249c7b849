"""Helpers for tests of the transfer service alone on a real broker: settings, a running
app, other services' events sent raw, the commands transfer sent read back
(used by the saga and the rebalancing-plan tests).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_shared.contracts import REGISTRY, Envelope, Payload
from jejaring_shared.contracts.stock import OutletRegistered, StockLevelChanged
from jejaring_shared.contracts.topics import STOCK_COMMANDS, TRANSFER_EVENTS
from jejaring_shared.settings import KafkaSettings
from jejaring_transfer.config import TransferSettings
from jejaring_transfer.entrypoints.app import create_app
from support.kafka_io import read_all, send_raw
from support.wait import wait_until


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def settings_for(db_url: str, bootstrap: str, **extra: Any) -> TransferSettings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "kafka": KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0),
        "relay_idle_poll_s": 0.1,
        "group_prefix": uid("transfer-t"),
        "deadline_poll_s": 0.1,
        "rematch_interval_s": 0.5,
        **extra,
    }
    return TransferSettings(**values)


@asynccontextmanager
async def running(settings: TransferSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=90, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://transfer") as client:
            await consumers_ready(app)
            yield app, client


async def consumers_ready(app: FastAPI) -> None:
    async def assigned() -> bool:
        return all(r.assigned for r in app.state.runtime.consumers)

    await wait_until(assigned, timeout=90, what="transfer consumers assigned")


def envelope(payload: Payload, key: str, source: str, correlation_id: str | None = None) -> bytes:
    et = REGISTRY.for_model(type(payload))
    return Envelope(
        type=et.name,
        source=source,
        key=key,
        correlation_id=correlation_id,
        payload=payload.model_dump(mode="json"),
    ).to_bytes()


async def emit(bootstrap: str, *items: tuple[Payload, str, str | None]) -> None:
    """Send other services' events, (payload, key, correlation id), to their topics."""
    by_topic: dict[str, list[tuple[bytes, bytes | None]]] = {}
    for payload, key, corr in items:
        et = REGISTRY.for_model(type(payload))
        source = et.name.split(".")[0]
        by_topic.setdefault(et.topic, []).append(
            (key.encode(), envelope(payload, key, source, corr))
        )
    for topic, messages in by_topic.items():
        await send_raw(bootstrap, topic, messages)


def outlet(oid: str, community: str, lat: float, lon: float, status: str = "active") -> Any:
    return (
        OutletRegistered(
            outlet_id=oid,
            name=oid,
            community=community,
            region="r1",
            lat=lat,
            lon=lon,
            status=status,
        ),
        oid,
        None,
    )


def level(oid: str, sku: str, available: int, rop: int) -> Any:
    return (
        StockLevelChanged(
            outlet_id=oid,
            sku=sku,
            on_hand=available,
            reserved=0,
            available=available,
            reorder_point=rop,
        ),
        f"{oid}:{sku}",
        None,
    )


async def scalar(app: FastAPI, sql: str, **params: Any) -> Any:
    async with app.state.runtime.engine.connect() as conn:
        return await conn.scalar(sa.text(sql), params)


async def projected(app: FastAPI, table: str, n: int, column: str, value: str) -> None:
    """Wait until the projection holds n rows with column = value (rows of other tests'
    events are there too: every test's consumer groups read the topics from the start)."""

    async def enough() -> bool:
        sql = f"SELECT count(*) FROM {table} WHERE {column} = :v"
        return bool(await scalar(app, sql, v=value) >= n)

    await wait_until(enough, timeout=30, what=f"{n} rows in {table} for {value}")


async def outlets_known(app: FastAPI, *outlet_ids: str) -> None:
    for oid in outlet_ids:
        await projected(app, "outlets_view", 1, "outlet_id", oid)


async def commands(bootstrap: str, request_id: str, expect: int) -> list[dict[str, Any]]:
    """The commands transfer sent to stock for this request, in order."""
    deadline = asyncio.get_running_loop().time() + 30
    got: list[dict[str, Any]] = []
    while asyncio.get_running_loop().time() < deadline:
        msgs = await read_all(bootstrap, STOCK_COMMANDS, expect=10**9, timeout=1.0)
        got = [
            json.loads(m.value)
            for m in msgs
            if json.loads(m.value).get("correlation_id") == request_id
        ]
        # different sources are different keys (partitions): order by time
        got.sort(key=lambda c: str(c["occurred_at"]))
        if len(got) >= expect:
            return got
    raise AssertionError(f"expected {expect} commands for {request_id}, got {got}")


async def transfer_events(bootstrap: str, request_id: str, expect: int) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + 30
    got: list[Any] = []
    while asyncio.get_running_loop().time() < deadline:
        msgs = await read_all(bootstrap, TRANSFER_EVENTS, expect=10**9, timeout=1.0)
        got = [m for m in msgs if m.key == request_id.encode()]
        if len(got) >= expect:
            return got
    raise AssertionError(f"expected {expect} transfer events for {request_id}, got {len(got)}")


async def get(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/restock-requests/{request_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def until_state(
    client: httpx.AsyncClient, request_id: str, predicate: Any, what: str, timeout: float = 30
) -> dict[str, Any]:
    async def check() -> Any:
        body = await get(client, request_id)
        return body if predicate(body) else None

    result: dict[str, Any] = await wait_until(check, timeout=timeout, what=what)
    return result
