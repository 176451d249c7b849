"""The demo's headline as a benchmark figure.

demo.stockout_reduction
    `python -m demo run` in-process: the seeded network (seed 7) runs three times on fresh
    stacks (own Kafka broker, SQLite databases, every service and the gateway as
    processes; the run's shared broker is not used): (a) no balancing, (b) reactive
    matching, (c) reactive + weekly rebalancing, with the same demand and the same
    inventory entering the network. Value: % fewer stockout outlet-days in (c) than in
    (a). Reference: (a)'s stockout outlet-days in the same run (ratio = c / a).
    Goal: >= 50% fewer than (a), and fewer than (b). Full: 50 outlets x 200 skus x 30
    days (the `make demo` default); quick: 10 outlets x 30 skus x 7 days.
"""

from __future__ import annotations

from bench.harness import Context, Result
from demo.runner import run_demo

FULL = {"seed": 7, "days": 30, "outlets": 50, "skus": 200}
QUICK = {"seed": 7, "days": 7, "outlets": 10, "skus": 30}


async def run(ctx: Context) -> list[Result]:
    cfg = QUICK if ctx.quick else FULL
    demo = await run_demo(
        seed=cfg["seed"],
        days=cfg["days"],
        outlets=cfg["outlets"],
        skus=cfg["skus"],
        out=None,
        progress=lambda message, _advance: ctx.status(f"demo {message}"),
        command="python -m bench.run (bench_demo)",
    )
    a, b, c = demo.results["a"], demo.results["b"], demo.results["c"]
    s = demo.summary
    return [
        Result(
            name="demo.stockout_reduction",
            value=round(100 * (s.reduction_vs_a or 0.0), 1),
            unit="% fewer stockout outlet-days (c) vs (a)",
            reference="(a) no balancing, same run",
            reference_value=float(a.stockout_outlet_days),
            ratio=round(c.stockout_outlet_days / a.stockout_outlet_days, 3)
            if a.stockout_outlet_days
            else None,
            goal=">= 50% fewer than (a) and fewer than (b)",
            met=s.met,
            extra={
                "db": "sqlite",
                "n": int(demo.config["levels"]) * int(cfg["days"]),
                "config": cfg,
                "stockout_outlet_days": {
                    "a": a.stockout_outlet_days,
                    "b": b.stockout_outlet_days,
                    "c": c.stockout_outlet_days,
                },
                "fill_rate": {k: round(r.fill_rate, 4) for k, r in demo.results.items()},
                "units_moved": {k: r.units_moved for k, r in demo.results.items()},
                "transfer_cost": {k: r.transfer_cost for k, r in demo.results.items()},
                "rebalancing": c.rebalancing,
                "wall_s": round(float(demo.config["wall_s"]), 1),
                "note": "value = 100 x (1 - c / a) stockout outlet-days (outlet x sku x day "
                "with nothing available at the day's end, read back from stock); each "
                "scenario on a fresh stack of its own; see docs/demo.md",
            },
        )
    ]
