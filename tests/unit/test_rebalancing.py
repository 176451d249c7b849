"""The rebalancing planner's rules on random networks (quality figures are in `make bench`)."""

from __future__ import annotations

import random

import pytest

from jejaring_transfer.domain.rebalancing import (
    Problem,
    Sink,
    Source,
    exact_min_cost_flow,
    greedy_nearest,
    plan_sku,
    plan_sku_linear,
)


def network(seed: int, n: int, *, min_quantity: int = 6, case_pack: int = 1) -> Problem:
    rng = random.Random(seed)

    def place() -> tuple[float, float]:
        return -6.4 + rng.uniform(-0.3, 0.3), 106.8 + rng.uniform(-0.3, 0.3)

    sources = [Source(f"o{i}", *place(), rng.randint(5, 60)) for i in range(n)]
    sources += [Source("dc", *place(), 200, unit_price=2_000)]
    sinks = [
        Sink(f"d{j}", *place(), rng.randint(3, 50), rng.randint(0, 5), rng.uniform(0.5, 8))
        for j in range(n)
    ]
    return Problem("A", sources, sinks, min_quantity=min_quantity, case_pack=case_pack)


@pytest.mark.parametrize("seed", range(20))
def test_plans_keep_every_rule(seed: int) -> None:
    problem = network(seed, 12, min_quantity=4 + seed % 5, case_pack=1 + seed % 3)
    plan = plan_sku(problem)
    sent: dict[str, int] = {}
    got: dict[str, int] = {}
    for line in plan.lines:
        assert line.quantity >= problem.min_quantity
        assert line.quantity % problem.case_pack == 0
        sent[line.source] = sent.get(line.source, 0) + line.quantity
        got[line.sink] = got.get(line.sink, 0) + line.quantity
    for s in problem.sources:
        assert sent.get(s.id, 0) <= s.quantity  # never more than the surplus
    for t in problem.sinks:
        assert got.get(t.id, 0) <= t.quantity  # never past the target
    assert plan.short == sum(t.quantity for t in problem.sinks) - sum(got.values())


@pytest.mark.parametrize("seed", range(10))
def test_sparse_lanes_cost_within_one_percent_of_the_exact_flow(seed: int) -> None:
    problem = network(seed, 30)
    assert plan_sku_linear(problem).cost <= exact_min_cost_flow(problem).cost * 1.01


def test_beats_greedy_nearest_on_average() -> None:
    ours = sum(plan_sku(network(seed, 20)).cost for seed in range(10))
    greedy = sum(greedy_nearest(network(seed, 20)).cost for seed in range(10))
    assert ours < greedy


def test_expiring_stock_goes_where_it_sells_fastest() -> None:
    source = Source("o1", -6.40, 106.80, 10, expiring=True)
    slow = Sink("slow", -6.40, 106.81, 10, daily_rate=0.5)
    fast = Sink("fast", -6.40, 106.82, 10, daily_rate=20.0)
    plan = plan_sku(Problem("milk", [source], [slow, fast], min_quantity=10))
    assert [line.sink for line in plan.lines] == ["fast"]
