"""`make demo` end to end, small: `python -m demo run` runs the three scenarios against
real stacks (Kafka, every service and the gateway as processes) and writes the report."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAYS, OUTLETS, SKUS = 5, 6, 8


def _seed() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # demo/ is a top-level folder, like bench/
    return importlib.import_module("demo.seed")


def test_seed_is_reproducible_and_inventory_is_equal() -> None:
    seed = _seed()
    one = seed.build(3, outlets=OUTLETS, skus=SKUS, days=DAYS)
    two = seed.build(3, outlets=OUTLETS, skus=SKUS, days=DAYS)
    assert (one.demand == two.demand).all()
    assert one.deliveries == two.deliveries
    assert one.inventory_in() == two.inventory_in()
    assert any(p.member_made for p in one.products)
    assert {s.kind for s in one.suppliers} == {"small_producer", "community_manager"}


@pytest.mark.timeout(1200)
def test_three_scenarios_run_end_to_end_and_write_the_report(tmp_path: Path) -> None:
    args = ["--seed", "7", "--days", str(DAYS), "--outlets", str(OUTLETS), "--skus", str(SKUS)]
    done = subprocess.run(
        [sys.executable, "-m", "demo", "run", *args, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stockout outlet-days" in done.stdout

    data = json.loads((tmp_path / "latest.json").read_text())
    levels = data["config"]["levels"]
    assert levels == _seed().build(7, outlets=OUTLETS, skus=SKUS, days=DAYS).levels
    scenarios = data["scenarios"]
    assert list(scenarios) == ["a", "b", "c"]
    for r in scenarios.values():
        # every outlet-sku-day was read back from the stock service
        assert r["outlet_sku_days"] == DAYS * levels
        assert len(r["daily_stockouts"]) == DAYS
        assert 0 < r["sold"] <= r["demanded"]
    a, b, c = scenarios["a"], scenarios["b"], scenarios["c"]
    # (a) never asks for restock; (b) moves stock through the saga; (c) used the plan API
    assert a["requests"] == 0
    assert a["units_moved"] == 0
    assert b["requests"] > 0
    assert b["units_moved"] > 0
    assert c["rebalancing"] in ("used", "unavailable")
    assert "stockout_reduction_c_vs_a" in data["summary"]
    assert "| stockout outlet-days |" in (tmp_path / "latest.md").read_text()
    assert (tmp_path / "chart.svg").read_text().startswith("<svg")
