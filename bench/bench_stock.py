"""The stock service: POS intake throughput.

stock.pos_intake
    N sale lines posted to `POST /api/v1/outlets/{id}/sales` in batches of 500 (the stock
    service app in process, through httpx's ASGI transport, one request at a time), each
    line with its own idempotency key, spread over SKUS skus. Each batch is one
    transaction: de-duplicating insert of the 500 movements, the level projections
    locked and updated, the crossing events and stock.level_changed (one per sku touched)
    written to the outbox. Kafka is running; the relay publishes alongside.
    Bodies are encoded before timing, as the reference's rows are built before it.
    Reference: the same 500-row batches inserted into the same `movements` table of the
    same database with a SQLAlchemy Core executemany, one transaction per batch (no
    validation, no de-duplication, no levels, no events).

Each rep: intake -> raw insert, with fresh keys, so the two alternate and share drift.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from bench.harness import REPEATS, Context, DbKind, Result, median, timed
from jejaring_stock.adapters.tables import MOVEMENTS
from jejaring_stock.config import StockSettings
from jejaring_stock.entrypoints.app import create_app

N_FULL = 20_000
N_QUICK = 2_000
BATCH = 500
SKUS = 100
GOAL_RATE = 10_000.0
GOAL_RATIO = 0.5


async def run(ctx: Context) -> list[Result]:
    n = N_QUICK if ctx.quick else N_FULL
    results: list[Result] = []
    for db in ctx.dbs:
        results.append(await _bench_db(ctx, db, n))
    return results


def _lines(tag: str, n: int) -> list[dict[str, Any]]:
    sold = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    return [
        {
            "idempotency_key": f"{tag}-{i}",
            "sku": f"sku{i % SKUS:03d}",
            "quantity": 1 + i % 3,
            "sold_at": sold,
        }
        for i in range(n)
    ]


async def _bench_db(ctx: Context, db: DbKind, n: int) -> Result:
    tag = uuid.uuid4().hex[:8]
    settings = StockSettings(
        database_url=await ctx.database_url(db, "stock"),
        kafka=ctx.kafka_settings(),
        commands_topic=f"stock.commands.bench{tag}",
        commands_group=f"stock-bench{tag}",
        velocity_interval_s=3600,
    )
    app = create_app(settings)
    rates: dict[str, list[float]] = defaultdict(list)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30):
        engine = app.state.runtime.engine
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stock") as client:
            outlet = f"bench-{tag}"
            resp = await client.post("/api/v1/outlets", json={"id": outlet, "name": "bench"})
            resp.raise_for_status()
            for rep in range(REPEATS + 1):
                size = max(n // 10, BATCH * 2) if rep == 0 else n
                label = f"{db} warm-up" if rep == 0 else f"{db} run {rep}/{REPEATS}"
                lines = _lines(f"r{rep}", size)

                # Encoded before the clock starts, as the raw rows are: a POS encodes its
                # batch on its own machine, so that is not the service's cost.
                chunks = [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]
                bodies = [(json.dumps({"lines": c}).encode(), len(c)) for c in chunks]

                async def post_batches(bodies: list[tuple[bytes, int]] = bodies) -> None:
                    for body, count in bodies:
                        r = await client.post(
                            f"/api/v1/outlets/{outlet}/sales",
                            content=body,
                            headers={"content-type": "application/json"},
                        )
                        r.raise_for_status()
                        if r.json()["accepted"] != count:
                            raise AssertionError(f"batch not fully accepted: {r.text[:300]}")

                ctx.status(f"{label}: POS intake of {size:,} lines")
                t_intake = await timed(post_batches)
                rows = _raw_rows(f"raw{rep}", outlet, lines)
                ctx.status(f"{label}: raw executemany of {size:,} rows")
                t_raw = await timed(functools.partial(_insert_raw, engine, rows))
                if rep:
                    rates["intake"].append(size / t_intake)
                    rates["raw"].append(size / t_raw)
    intake, raw = median(rates["intake"]), median(rates["raw"])
    ratio = intake / raw
    return Result(
        name="stock.pos_intake",
        value=intake,
        unit="lines/s",
        reference="raw executemany, same rows and db",
        reference_value=raw,
        ratio=ratio,
        goal=f">= {GOAL_RATE:,.0f} lines/s and >= {GOAL_RATIO}x raw"
        if db == "postgresql"
        else "informational on sqlite",
        met=(intake >= GOAL_RATE and ratio >= GOAL_RATIO) if db == "postgresql" else None,
        extra={
            "db": db,
            "n": n,
            "batch": BATCH,
            "skus": SKUS,
            "repeats": REPEATS,
            "samples": rates["intake"],
            "reference_samples": rates["raw"],
            "note": (
                f"batches of {BATCH} lines over {SKUS} skus through the HTTP API (ASGI, in "
                "process), one request at a time; each batch de-duplicates, updates levels "
                "and writes its events in one transaction. Reference: the same rows into "
                "`movements` by Core executemany, one transaction per batch"
            ),
        },
    )


def _raw_rows(tag: str, outlet: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "outlet_id": outlet,
            "sku": line["sku"],
            "kind": "sale",
            "quantity": -line["quantity"],
            "reason": None,
            "actor": "pos",
            "occurred_at": datetime.fromisoformat(line["sold_at"]),
            "recorded_at": now,
            "idempotency_key": f"{tag}-{line['idempotency_key']}",
            "reference": None,
        }
        for line in lines
    ]


async def _insert_raw(engine: Any, rows: list[dict[str, Any]]) -> None:
    stmt = sa.insert(MOVEMENTS)
    for first in range(0, len(rows), BATCH):
        async with engine.begin() as conn:
            await conn.execute(stmt, rows[first : first + BATCH])
