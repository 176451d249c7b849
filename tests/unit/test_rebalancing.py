"""The rebalancing planner's rules on random networks (quality figures are in `make bench`)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from jejaring_transfer.domain.rebalancing import (
    NETWORK_OPTIONS,
    CostModel,
    Plan,
    Problem,
    Sink,
    Source,
    _greedy_flows,
    _lane_flows,
    _net,
    _plan_of,
    _Search,
    _unit_flows,
    evaluate,
    exact_min_cost_flow,
    greedy_nearest,
    plan_network,
    plan_sku,
    plan_sku_linear,
    solve_exact,
)
from jejaring_transfer.domain.rebalancing_gen import network_problems, square

QUICK = 50_000  # local search effort where a test checks rules, not quality
FEW = 10  # neighbourhood solves where a test checks rules, not quality


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


def assert_legal(problem: Problem, plan: Plan) -> None:
    """Every line at least the minimum in whole packs; no source gives more than its
    surplus, no sink gets more than it needs."""
    pack, minimum = problem.case_pack, problem.min_quantity
    assert all(ln.quantity >= minimum and ln.quantity % pack == 0 for ln in plan.lines)
    for s in problem.sources:
        assert sum(ln.quantity for ln in plan.lines if ln.source == s.id) <= s.quantity
    for t in problem.sinks:
        assert sum(ln.quantity for ln in plan.lines if ln.sink == t.id) <= t.quantity


@pytest.mark.parametrize("seed", range(20))
def test_plans_keep_every_rule(seed: int) -> None:
    problem = network(seed, 12, min_quantity=4 + seed % 5, case_pack=1 + seed % 3)
    plan = plan_sku(problem, effort=QUICK, lns_rounds=FEW)
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
    ours = sum(plan_sku(network(seed, 20), effort=QUICK, lns_rounds=FEW).cost for seed in range(10))
    greedy = sum(greedy_nearest(network(seed, 20)).cost for seed in range(10))
    assert ours < greedy


def test_expiring_stock_goes_where_it_sells_fastest() -> None:
    source = Source("o1", -6.40, 106.80, 10, expiring=True)
    slow = Sink("slow", -6.40, 106.81, 10, daily_rate=0.5)
    fast = Sink("fast", -6.40, 106.82, 10, daily_rate=20.0)
    plan = plan_sku(Problem("milk", [source], [slow, fast], min_quantity=10))
    assert [line.sink for line in plan.lines] == ["fast"]


@pytest.mark.parametrize("seed", range(6))
def test_network_plans_keep_every_rule(seed: int) -> None:
    (problem,) = network_problems(120, 1, seed, share=0.3)
    plan = plan_network([problem], workers=1)[0]
    pack, least = problem.case_pack, problem.min_quantity
    sent: dict[str, int] = {}
    got: dict[str, int] = {}
    for line in plan.lines:
        assert line.quantity >= least and line.quantity % pack == 0
        sent[line.source] = sent.get(line.source, 0) + line.quantity
        got[line.sink] = got.get(line.sink, 0) + line.quantity
    assert all(sent.get(s.id, 0) <= s.quantity for s in problem.sources)
    assert all(got.get(t.id, 0) <= t.quantity for t in problem.sinks)


@pytest.mark.parametrize("seed", range(4))
def test_sparse_planner_within_one_percent_of_the_dense_flow_without_fixed_costs(
    seed: int,
) -> None:
    problem = square(30, seed, costs=CostModel(fixed_per_lane=0))
    # No trips to save: the search past the first flows has nothing to find.
    assert plan_sku(problem, effort=0).cost <= exact_min_cost_flow(problem).cost * 1.01


@pytest.mark.parametrize("seed", range(3))
def test_within_five_percent_of_a_proven_optimum(seed: int) -> None:
    problem = square(4, seed, min_quantity=6)
    exact = solve_exact(problem, time_limit_s=10)
    assert exact.proven
    assert plan_sku(problem).cost <= exact.plan.cost * 1.05


@pytest.mark.parametrize("seed", range(3))
def test_saves_a_tenth_against_greedy(seed: int) -> None:
    problem = square(20, seed, min_quantity=6)
    assert plan_sku(problem).cost <= 0.9 * greedy_nearest(problem).cost


@pytest.mark.parametrize("seed", range(2))
def test_network_mode_plans_are_legal_and_close_to_the_full_search(seed: int) -> None:
    # Fast slope scaling ignores minimums inside its rounds: only legal polished flows
    # may come out, and in total they should stay near the full search's cost.
    problems = network_problems(150, 6, seed, share=0.3)
    plans = plan_network(problems, workers=1)
    for problem, plan in zip(problems, plans, strict=True):
        assert all(line.quantity >= problem.min_quantity for line in plan.lines)
        assert all(line.quantity % problem.case_pack == 0 for line in plan.lines)
    # Network mode skips the local search: its plans cost 5-19% more here than the
    # search's at a quarter of its default effort.
    full = sum(plan_sku(problem, effort=250_000, lns_rounds=0).cost for problem in problems)
    assert sum(plan.cost for plan in plans) <= full * 1.25
    assert NETWORK_OPTIONS["fast"]


def test_cp_sat_proves_the_optimum_of_a_small_instance_and_agrees_with_scip() -> None:
    problem = square(4, 1, min_quantity=6)
    cp_sat = solve_exact(problem, time_limit_s=10, solver="CP-SAT")
    scip = solve_exact(problem, time_limit_s=10)
    assert cp_sat.proven and scip.proven
    assert cp_sat.plan.cost == scip.plan.cost
    assert plan_sku(problem).cost <= cp_sat.plan.cost * 1.05


def test_a_bounded_flow_is_the_cheapest_legal_flow_over_exactly_its_lanes() -> None:
    # Two sources, two sinks, every lane open: small enough to try every flow.
    sources = [Source("a", -6.40, 106.80, 14), Source("b", -6.45, 106.85, 12)]
    sinks = [Sink("s", -6.41, 106.81, 9), Sink("t", -6.44, 106.84, 13)]
    net = _net(Problem("A", sources, sinks, min_quantity=4), 16)
    assert net.c.size == 4

    def legal(f: tuple[int, ...]) -> bool:
        return bool(
            (np.bincount(net.li, weights=f, minlength=2) <= net.a).all()
            and (np.bincount(net.lj, weights=f, minlength=2) <= net.b).all()
        )

    for lanes in ([0, 1, 2, 3], [0, 1, 3]):
        x = net.bounded(np.array(lanes))
        assert x is not None and legal(tuple(x.tolist()))
        assert set(np.flatnonzero(x).tolist()) == set(lanes)
        assert (x[lanes] >= net.minimum).all()
        ranges = [
            range(net.minimum, int(c) + 1) if lane in lanes else range(1)
            for lane, c in enumerate(net.cap)
        ]
        best = min(net.value(np.array(f)) for f in itertools.product(*ranges) if legal(f))
        assert net.value(x) == best


def test_a_bounded_flow_refuses_lanes_that_cannot_all_carry_the_minimum() -> None:
    # A sink needing 8 cannot take 6 from each of two sources; a source holding 8 cannot
    # give 6 to each of two sinks.
    sources = [Source("a", -6.40, 106.80, 20), Source("b", -6.40, 106.81, 20)]
    net = _net(Problem("A", sources, [Sink("s", -6.40, 106.82, 8)], min_quantity=6), 16)
    assert net.c.size == 2
    assert net.bounded(np.arange(2)) is None
    one = net.bounded(np.arange(1))
    assert one is not None and one[0] == 8
    sinks = [Sink("s", -6.40, 106.82, 20), Sink("t", -6.40, 106.83, 20)]
    net = _net(Problem("A", [Source("a", -6.40, 106.80, 8)], sinks, min_quantity=6), 16)
    assert net.c.size == 2 and net.bounded(np.arange(2)) is None


def test_the_local_search_improves_the_constructed_plan_and_more_effort_never_hurts() -> None:
    problem = square(20, 1, min_quantity=6)
    built = plan_sku(problem, effort=0, lns_rounds=0).cost
    searched = plan_sku(problem, effort=QUICK, lns_rounds=0).cost
    assert searched < built
    assert plan_sku(problem, lns_rounds=0).cost <= searched


def test_plans_are_the_same_for_the_same_seed_and_legal_on_any_effort() -> None:
    problem = square(12, 4, min_quantity=6, case_pack=2)
    assert plan_sku(problem) == plan_sku(problem)
    built = plan_sku(problem, effort=0, lns_rounds=0).cost
    for effort in (1, 1_000):
        plan = plan_sku(problem, effort=effort, lns_rounds=FEW)
        assert plan.cost <= built
        assert_legal(problem, plan)


@pytest.mark.parametrize("seed", range(3))
def test_a_neighbourhood_over_every_sink_finds_the_proven_optimum(seed: int) -> None:
    # With every sink inside, the neighbourhood's CP-SAT model is the whole problem.
    problem = square(4, seed, min_quantity=6)
    exact = solve_exact(problem, time_limit_s=10, solver="CP-SAT")
    assert exact.proven
    net = _net(problem, 16)
    search = _Search(net)  # from the empty plan: everything short
    search.neighbourhood(np.arange(net.b.size), 10.0)
    assert search.value == exact.plan.cost


def test_the_neighbourhood_search_improves_the_local_search_and_keeps_every_rule() -> None:
    for problem in (square(20, 1, min_quantity=6), square(12, 3, min_quantity=5, case_pack=3)):
        searched = plan_sku(problem, effort=QUICK, lns_rounds=0).cost
        plan = plan_sku(problem, effort=QUICK, lns_rounds=30)
        assert plan.cost < searched
        assert_legal(problem, plan)


def test_a_neighbourhood_keeps_the_rest_of_the_plan_and_its_value_is_the_true_cost() -> None:
    # After a descent the sources are shared between sinks inside and outside.
    problem = square(12, 2, min_quantity=6)
    net = _net(problem, 16)
    search = _Search(net)
    search.limit = QUICK
    search.descend(_lane_flows(net, _greedy_flows(problem)))
    before = search.x.copy()
    sinks = np.array([0, 3, 5])
    assert search.neighbourhood(sinks, 1.0)
    outside = ~np.isin(net.lj, sinks)
    assert (search.x[outside] == before[outside]).all()
    assert (np.bincount(net.li, weights=search.x, minlength=net.a.size) <= net.a).all()
    assert (np.bincount(net.lj, weights=search.x, minlength=net.b.size) <= net.b).all()
    assert not ((search.x > 0) & (search.x < net.minimum)).any()
    plan = _plan_of(problem, net, search.x)
    assert search.value == plan.cost == evaluate(problem, _unit_flows(net, search.x)).cost


def test_lns_rounds_bounds_the_neighbourhood_solves(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    solve = _Search.neighbourhood

    def counted(self: _Search, sinks: np.ndarray, time_limit: float) -> bool:
        solved = solve(self, sinks, time_limit)
        if solved:  # a neighbourhood with nothing to solve costs no round
            calls.append(sinks.size)
        return solved

    monkeypatch.setattr(_Search, "neighbourhood", counted)
    problem = square(12, 0, min_quantity=6)
    plan_sku(problem, effort=QUICK, lns_rounds=7)
    assert len(calls) == 7
    calls.clear()
    # Given rounds enough, the neighbourhoods grow to every sink, then the search stops.
    plan_sku(problem, effort=QUICK, lns_rounds=10_000)
    assert max(calls) == len(problem.sinks) and len(calls) < 10_000
