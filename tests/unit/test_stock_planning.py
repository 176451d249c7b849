"""Sales rates, derived reorder points and pareto classes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from jejaring_stock.domain.model import derived_levels, pareto_classes, smoothed_rate
from support.stock import level, make_outlet, receive, running_stock, stock_settings


def test_smoothed_rate_and_derived_levels() -> None:
    assert smoothed_rate([], 0.3) == 0.0
    assert smoothed_rate([10, 10, 10], 0.3) == 10.0
    assert smoothed_rate([0, 0, 10], 0.5) == 5.0
    assert derived_levels(4.0, lead_time_days=2, safety_stock=3, review_days=7) == (11, 39)


def test_pareto_classes() -> None:
    classes = pareto_classes({"a": 70, "b": 15, "c": 10, "d": 5, "e": 0})
    assert classes == {"a": "A", "b": "A", "c": "B", "d": "C", "e": "C"}


@pytest.fixture
async def stock(db_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # Both databases: the days of sale are counted in SQL (UTC days on PostgreSQL too).
    settings = stock_settings(db_url, velocity_interval_s=3600)
    async with running_stock(settings) as pair:
        yield pair


async def test_rates_from_late_uploaded_sales_set_reorder_points_unless_pinned(
    stock: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = stock
    outlet = await make_outlet(client)
    await receive(client, outlet, "beras", 500)
    await receive(client, outlet, "gula", 500)
    await receive(client, outlet, "teh", 500)
    await receive(client, outlet, "kopi", 5000)
    today = datetime.now(UTC).replace(hour=12)
    lines = [
        {
            "idempotency_key": f"{sku}-{d}",
            "sku": sku,
            "quantity": qty,
            "sold_at": (today - timedelta(days=d)).isoformat(),
        }
        for d in range(1, 29)
        for sku, qty in (("beras", 10), ("gula", 1), ("teh", 10))
    ]
    # Today is not over: its sales are in no rate and no pareto class yet.
    lines.append(
        {
            "idempotency_key": "kopi-today",
            "sku": "kopi",
            "quantity": 4000,
            "sold_at": datetime.now(UTC).isoformat(),
        }
    )
    resp = await client.post(f"/api/v1/outlets/{outlet}/sales", json={"lines": lines})
    assert resp.json()["accepted"] == 85
    await client.put(f"/api/v1/outlets/{outlet}/stock/gula/settings", json={"reorder_point": 50})
    # A lead time of 0 (supplied the same day) is ops' figure, not "use the default".
    await client.put(f"/api/v1/outlets/{outlet}/stock/teh/settings", json={"lead_time_days": 0})
    refreshed = await client.post("/api/v1/velocity/refresh")
    assert refreshed.status_code == 200 and refreshed.json()["outlets_failed"] == []
    beras = await level(client, outlet, "beras")
    assert beras["daily_rate"] == 10.0
    assert beras["reorder_point"] == 20  # 10/day x 2 days lead time
    assert beras["maximum"] == 90
    assert beras["days_of_cover"] == round(220 / 10, 2)
    teh = await level(client, outlet, "teh")
    assert (teh["daily_rate"], teh["reorder_point"]) == (10.0, 0)
    assert (await level(client, outlet, "kopi"))["daily_rate"] == 0.0
    gula = await level(client, outlet, "gula")
    assert gula["reorder_point"] == 50 and gula["reorder_point_pinned"]
    pareto = (await client.get("/api/v1/pareto")).json()
    assert [(s["sku"], s["class"]) for s in pareto["skus"]] == [
        ("beras", "A"),
        ("teh", "A"),
        ("gula", "C"),
    ]
