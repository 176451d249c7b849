"""Rebalancing plans through the transfer API.

The transfer service runs in-process (the run's broker, a fresh database per backend). Its
projections are filled directly: N outlets x K skus, a third of the levels in surplus
(above a maximum of 40), a third short (under a reorder point of 10), the rest in between;
one supplier offer per sku.

transfer.plan_propose
    POST /rebalancing/plans over every sku (max_lines 5000), REPEATS times; value = median
    seconds. Reference: `domain.plans.propose` on the same projections in the same run,
    with the service's `plan_search_effort` and `plan_lns_rounds` (the solve alone, no
    database); the ratio is what reading the projections and writing the plan add.
transfer.plan_approve_per_line
    POST /rebalancing/plans/{id}/approve for the first L lines of a plan, in one call;
    value = ms per line (each opens a restock request, matches its fixed source, writes
    the leg and its stock.reserve). Reference: POST /restock-requests, one call per
    request, for L other outlet+sku pairs in the same run (ms per request).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from bench.harness import REPEATS, Context, DbKind, Result, median
from jejaring_shared.contracts import utcnow
from jejaring_transfer.adapters.tables import (
    offers_view,
    outlets_view,
    products_view,
    stock_view,
    suppliers_view,
)
from jejaring_transfer.api.plans import snapshot
from jejaring_transfer.config import TransferSettings
from jejaring_transfer.domain import plans
from jejaring_transfer.entrypoints.app import create_app as create_transfer

FULL = (300, 40, 200)  # outlets, skus, lines approved
QUICK = (60, 10, 40)


async def run(ctx: Context) -> list[Result]:
    results: list[Result] = []
    for db in ctx.dbs:
        results.extend(await _bench_db(ctx, db))
    return results


async def _fill(engine: Any, n_outlets: int, n_skus: int) -> list[tuple[str, str]]:
    """Projections of a random network; returns the (outlet, sku) pairs in between (neither
    short nor in surplus) for the reference requests."""
    rng = random.Random(7)
    now = utcnow()
    outlets = [f"o{i:04d}" for i in range(n_outlets)]
    skus = [f"s{k:03d}" for k in range(n_skus)]
    between: list[tuple[str, str]] = []
    levels = []
    for o in outlets:
        for s in skus:
            roll = rng.random()
            if roll < 1 / 3:
                available, maximum = rng.randint(60, 120), 40
            elif roll < 2 / 3:
                available, maximum = rng.randint(0, 8), None
            else:
                available, maximum = rng.randint(25, 35), 40
                between.append((o, s))
            levels.append(
                {
                    "outlet_id": o,
                    "sku": s,
                    "on_hand": available,
                    "reserved": 0,
                    "available": available,
                    "reorder_point": 10,
                    "maximum": maximum,
                    "updated_at": now,
                }
            )
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(outlets_view),
            [
                {
                    "outlet_id": o,
                    "name": o,
                    "community": f"c{i % 12}",
                    "region": f"r{i % 3}",
                    "lat": -6.2 + rng.uniform(-0.4, 0.4),
                    "lon": 106.8 + rng.uniform(-0.4, 0.4),
                    "status": "at_risk" if i % 10 == 0 else "active",
                    "updated_at": now,
                }
                for i, o in enumerate(outlets)
            ],
        )
        await conn.execute(sa.insert(stock_view), levels)
        await conn.execute(
            sa.insert(products_view),
            [
                {
                    "sku": s,
                    "case_pack": 1 + k % 3,
                    "min_transfer_qty": 2,
                    "pareto_class": "ABC"[k % 3],
                    "perishable": False,
                    "retired": False,
                    "updated_at": now,
                }
                for k, s in enumerate(skus)
            ],
        )
        await conn.execute(
            sa.insert(suppliers_view),
            [
                {
                    "supplier_id": "sup",
                    "community": "c0",
                    "assigned": 0,
                    "accepted": 0,
                    "declined": 0,
                    "timed_out": 0,
                    "shipped": 0,
                    "updated_at": now,
                }
            ],
        )
        await conn.execute(
            sa.insert(offers_view),
            [
                {
                    "offer_id": f"of-{s}",
                    "supplier_id": "sup",
                    "sku": s,
                    "quantity": 200,
                    "unit_price": rng.randint(3_000, 9_000),
                    "lead_time_hours": 24,
                    "min_order": 1,
                    "valid_until": None,
                    "status": "active",
                    "updated_at": now,
                }
                for s in skus
            ],
        )
    return between


async def _bench_db(ctx: Context, db: DbKind) -> list[Result]:
    n_outlets, n_skus, n_lines = QUICK if ctx.quick else FULL
    settings = TransferSettings(
        database_url=await ctx.database_url(db, "plans"),
        kafka=ctx.kafka_settings(),
        group_prefix=f"bench-plans-{uuid.uuid4().hex[:8]}",
        auto_restock=False,
        rematch_interval_s=3600,  # the driver's re-match would compete with the timings
    )
    app = create_transfer(settings)
    async with LifespanManager(app, startup_timeout=90, shutdown_timeout=30):
        engine = app.state.runtime.engine
        ctx.status(f"plans: filling {n_outlets} outlets x {n_skus} skus ({db})")
        between = await _fill(engine, n_outlets, n_skus)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://transfer", timeout=600
        ) as client:
            ctx.status(f"plans: propose ({db})")
            api_s: list[float] = []
            plan: dict[str, Any] = {}
            for _ in range(REPEATS):
                start = time.perf_counter()
                resp = await client.post("/api/v1/rebalancing/plans", json={"max_lines": 5000})
                api_s.append(time.perf_counter() - start)
                resp.raise_for_status()
                plan = resp.json()
            async with engine.connect() as conn:
                snap = await snapshot(conn, None, utcnow())
            solve_s: list[float] = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                await asyncio.to_thread(
                    plans.propose,
                    snap,
                    horizon_days=7,
                    max_lines=5000,
                    # The service's own search, so the ratio is the API's overhead.
                    solve=plans.search_solver(
                        settings.plan_search_effort, settings.plan_lns_rounds
                    ),
                )
                solve_s.append(time.perf_counter() - start)

            ctx.status(f"plans: approve {n_lines} lines ({db})")
            ids = [x["id"] for x in plan["lines"][:n_lines]]
            start = time.perf_counter()
            resp = await client.post(
                f"/api/v1/rebalancing/plans/{plan['id']}/approve", json={"lines": ids}
            )
            approve_s = time.perf_counter() - start
            resp.raise_for_status()
            ref_pairs = between[: len(ids)]
            start = time.perf_counter()
            for outlet_id, sku in ref_pairs:
                r = await client.post(
                    "/api/v1/restock-requests",
                    json={"outlet_id": outlet_id, "sku": sku, "quantity": 5},
                )
                r.raise_for_status()
            request_s = time.perf_counter() - start
    api, solve = median(api_s), median(solve_s)
    per_line = approve_s / max(len(ids), 1) * 1000
    per_request = request_s / max(len(ref_pairs), 1) * 1000
    size = {
        "db": db,
        "outlets": n_outlets,
        "skus": n_skus,
        "plan_lines": plan["totals"]["lines"],
        "plan_units": plan["totals"]["units"],
    }
    return [
        Result(
            name="transfer.plan_propose",
            value=round(api, 3),
            unit="s",
            reference="domain.plans.propose alone on the same projections",
            reference_value=round(solve, 3),
            ratio=round(api / solve, 2) if solve else None,
            extra=size,
        ),
        Result(
            name="transfer.plan_approve_per_line",
            value=round(per_line, 2),
            unit="ms",
            reference="POST /restock-requests, one call per request",
            reference_value=round(per_request, 2),
            ratio=round(per_line / per_request, 2) if per_request else None,
            extra={**size, "lines": len(ids), "requests": len(ref_pairs)},
        ),
    ]
