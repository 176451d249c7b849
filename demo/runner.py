"""Run the three scenarios one after the other and write the report."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report
from .seed import build
from .sim import SCENARIOS, ScenarioResult, Simulation


@dataclass
class DemoRun:
    config: dict[str, Any]
    results: dict[str, ScenarioResult]
    summary: report.Summary


def steps(days: int, scenarios: int = len(SCENARIOS)) -> int:
    """Progress units of a run: each scenario's seeding plus one per day."""
    return scenarios * (days + 1)


async def run_demo(
    *,
    seed: int,
    days: int,
    outlets: int,
    skus: int,
    out: Path | None,
    only: Sequence[str] = ("a", "b", "c"),
    progress: Callable[[str, float], None] = lambda _m, _a: None,
    command: str = "python -m demo run",
) -> DemoRun:
    started = time.monotonic()
    net = build(seed, outlets=outlets, skus=skus, days=days)
    workdir = Path(tempfile.mkdtemp(prefix="jejaring-demo-"))
    results: dict[str, ScenarioResult] = {}
    try:
        for scenario in SCENARIOS:
            if scenario.key in only:
                sim = Simulation(net, scenario, workdir, progress)
                results[scenario.key] = await sim.run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = report.summarise(results)
    config = {
        "command": command,
        "seed": seed,
        "days": days,
        "outlets": outlets,
        "skus": len(net.products),
        "levels": net.levels,
        "suppliers": len(net.suppliers),
        "inventory_in": net.inventory_in(),
        "demand_units": int((net.demand * net.carried[None]).sum()),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "wall_s": time.monotonic() - started,
    }
    if out is not None:
        report.write(out, config, results, summary)
    return DemoRun(config, results, summary)
