"""Network rebalancing: move surplus to where it will be short, at least cost, per sku.

The core is OR-Tools' min-cost flow over sparse candidate lanes (each short outlet sees
its k nearest sources and every supplier). Minimum transfer quantities and a fixed cost
per lane make the exact problem a MILP; `plan_sku` handles them with a tested heuristic:
slope scaling (the fixed cost is spread over the flow the lane carried last round) plus
banning lanes whose flow falls under the minimum, re-solving each time. `exact_milp`
(SCIP) and `greedy_nearest` exist to measure it against.

Costs are integer rupiah: transport per unit and km, a supplier's unit price, a fixed
cost per lane (a trip), and a penalty per unit left short (so shipping is preferred
whenever it is cheaper than a stockout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ortools.graph.python import min_cost_flow
from ortools.linear_solver import pywraplp

EARTH_KM = 6371.0


@dataclass(frozen=True, slots=True)
class Source:
    """Where units can come from: an outlet's surplus above its maximum, or a supplier."""

    id: str
    lat: float
    lon: float
    quantity: int
    unit_price: int = 0  # rupiah; 0 for a peer outlet's own stock
    expiring: bool = False  # perishable units near expiry: send them where they sell fastest


@dataclass(frozen=True, slots=True)
class Sink:
    """An outlet that will be short: `quantity` brings it back to its target."""

    id: str
    lat: float
    lon: float
    quantity: int
    available: int = 0
    daily_rate: float = 0.0  # smoothed sales per day, for days of cover and perishables


@dataclass(frozen=True, slots=True)
class CostModel:
    per_unit_km: int = 40  # rupiah to carry one unit one km
    fixed_per_lane: int = 15_000  # rupiah per trip (a lane used at all)
    shortage_per_unit: int = 25_000  # rupiah: what a unit short costs (lost sale, goodwill)
    expiring_bonus_per_rate: int = 200  # rupiah off per unit per unit/day of the sink's rate


@dataclass(frozen=True, slots=True)
class Problem:
    sku: str
    sources: Sequence[Source]
    sinks: Sequence[Sink]
    min_quantity: int = 1
    case_pack: int = 1
    costs: CostModel = field(default_factory=CostModel)


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    source: str
    sink: str
    quantity: int
    cost: int  # transport + price + the lane's fixed cost, rupiah
    cover_after_days: float | None  # the sink's days of cover once it arrives


@dataclass(frozen=True, slots=True)
class Plan:
    sku: str
    lines: tuple[Line, ...]
    cost: int  # total objective: lines plus the shortage penalty for what is left short
    short: int  # units still short after the plan
    stockouts_avoided: int  # sinks at 0 available that the plan brings above 0


def distances_km(sources: Sequence[Source], sinks: Sequence[Sink]) -> np.ndarray:
    """Great-circle distances, sources x sinks, vectorised."""
    lat1 = np.radians([s.lat for s in sources])[:, None]
    lon1 = np.radians([s.lon for s in sources])[:, None]
    lat2 = np.radians([t.lat for t in sinks])[None, :]
    lon2 = np.radians([t.lon for t in sinks])[None, :]
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    result: np.ndarray = 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return result


def unit_costs(problem: Problem) -> np.ndarray:
    """Per-unit cost of every source -> sink lane (integer rupiah, never negative)."""
    c = problem.costs
    d = distances_km(problem.sources, problem.sinks)
    cost = np.rint(d * c.per_unit_km).astype(np.int64)
    cost += np.array([s.unit_price for s in problem.sources], dtype=np.int64)[:, None]
    expiring = np.array([s.expiring for s in problem.sources])
    if expiring.any():
        rate = np.array([t.daily_rate for t in problem.sinks])[None, :]
        bonus = np.rint(rate * c.expiring_bonus_per_rate).astype(np.int64)
        cost = np.where(expiring[:, None], np.maximum(cost - bonus, 0), cost)
    result: np.ndarray = cost
    return result


def candidate_lanes(problem: Problem, k: int) -> list[tuple[int, int]]:
    """Sparse lanes: each sink's k nearest outlet sources, plus every supplier."""
    n_src, n_snk = len(problem.sources), len(problem.sinks)
    if n_src == 0 or n_snk == 0:
        return []
    cost = unit_costs(problem)
    suppliers = [i for i, s in enumerate(problem.sources) if s.unit_price > 0]
    lanes: set[tuple[int, int]] = {(i, j) for i in suppliers for j in range(n_snk)}
    kk = min(k, n_src)
    nearest = np.argpartition(cost, kk - 1, axis=0)[:kk] if kk < n_src else None
    for j in range(n_snk):
        rows = nearest[:, j] if nearest is not None else range(n_src)
        lanes.update((int(i), j) for i in rows)
    return sorted(lanes)


def _round_down(q: int, pack: int) -> int:
    return q - q % pack if pack > 1 else q


def _solve_flow(
    problem: Problem, lanes: Sequence[tuple[int, int]], lane_cost: Sequence[int]
) -> list[int]:
    """Min-cost flow with shortage allowed at a penalty; returns the flow on each lane."""
    n_src, n_snk = len(problem.sources), len(problem.sinks)
    short_node, excess_node = n_src + n_snk, n_src + n_snk + 1
    total_supply = sum(s.quantity for s in problem.sources)
    total_demand = sum(t.quantity for t in problem.sinks)
    smcf = min_cost_flow.SimpleMinCostFlow()
    tails = [i for i, _ in lanes]
    heads = [n_src + j for _, j in lanes]
    caps = [min(problem.sources[i].quantity, problem.sinks[j].quantity) for i, j in lanes]
    # Unused surplus drains to `excess` for free; demand not met comes from `short` at the
    # shortage penalty; `short` may also drain to `excess` so the network balances.
    tails += list(range(n_src)) + [short_node] * n_snk + [short_node]
    heads += [excess_node] * n_src + [n_src + j for j in range(n_snk)] + [excess_node]
    caps += [s.quantity for s in problem.sources] + [t.quantity for t in problem.sinks]
    caps += [total_demand]
    costs = list(lane_cost) + [0] * n_src
    costs += [problem.costs.shortage_per_unit] * n_snk + [0]
    smcf.add_arcs_with_capacity_and_unit_cost(
        np.array(tails), np.array(heads), np.array(caps), np.array(costs)
    )
    supplies = [s.quantity for s in problem.sources] + [-t.quantity for t in problem.sinks]
    supplies += [total_demand, -total_supply]
    smcf.set_nodes_supplies(np.arange(len(supplies)), np.array(supplies))
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise RuntimeError(f"min-cost flow for {problem.sku} ended with status {status}")
    return [int(smcf.flow(a)) for a in range(len(lanes))]


def evaluate(problem: Problem, flows: dict[tuple[int, int], int]) -> Plan:
    """The true cost of a set of lane flows: transport, price, fixed costs, shortage."""
    cost = unit_costs(problem)
    received = [0] * len(problem.sinks)
    lines: list[Line] = []
    total = 0
    for (i, j), q in sorted(flows.items()):
        if q <= 0:
            continue
        line_cost = int(cost[i, j]) * q + problem.costs.fixed_per_lane
        total += line_cost
        received[j] += q
        sink = problem.sinks[j]
        cover = (sink.available + q) / sink.daily_rate if sink.daily_rate > 0 else None
        lines.append(Line(problem.sku, problem.sources[i].id, sink.id, q, line_cost, cover))
    short = sum(max(t.quantity - r, 0) for t, r in zip(problem.sinks, received, strict=True))
    total += short * problem.costs.shortage_per_unit
    avoided = sum(
        1
        for t, r in zip(problem.sinks, received, strict=True)
        if t.available <= 0 and t.available + r > 0
    )
    return Plan(problem.sku, tuple(lines), total, short, avoided)


def plan_sku(problem: Problem, *, k: int = 16, rounds: int = 4, drops: int = 12) -> Plan:
    """The heuristic plan: min-cost flow, slope scaling for the fixed lane costs, minimum
    quantities enforced by banning lanes that would carry less and re-solving, then a
    few lane drops (close the least-loaded lane if re-routing its units is cheaper)."""
    lanes = candidate_lanes(problem, k)
    if not lanes:
        return evaluate(problem, {})
    base = unit_costs(problem)
    fixed = problem.costs.fixed_per_lane
    minimum = max(problem.min_quantity, problem.case_pack)
    # First round: spread the fixed cost over the most a lane could carry.
    slope = {
        (i, j): int(base[i, j])
        + math.ceil(fixed / max(min(problem.sources[i].quantity, problem.sinks[j].quantity), 1))
        for i, j in lanes
    }

    def solve(banned: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
        banned = set(banned)
        flow: dict[tuple[int, int], int] = {}
        for _repair in range(8):
            live = [lane for lane in lanes if lane not in banned]
            if not live:
                return {}
            got = _solve_flow(problem, live, [slope[lane] for lane in live])
            flow = {
                lane: _round_down(q, problem.case_pack)
                for lane, q in zip(live, got, strict=True)
                if q > 0
            }
            under = {lane for lane, q in flow.items() if q < minimum}
            if not under:
                return flow
            banned |= under  # too little for a trip under the rules: re-route it
        return {lane: q for lane, q in flow.items() if q >= minimum}

    best_flow: dict[tuple[int, int], int] = {}
    best = evaluate(problem, {})
    for _ in range(rounds):
        flow = solve(set())
        plan = evaluate(problem, flow)
        if plan.cost < best.cost:
            best, best_flow = plan, flow
        # Slope scaling: next round charges each used lane's fixed cost over what it
        # carried now; unused lanes keep their slope.
        for lane, q in flow.items():
            slope[lane] = int(base[lane]) + math.ceil(fixed / q)
    # Drop moves: try closing the lanes that carry least.
    closed: set[tuple[int, int]] = set()
    for lane in sorted(best_flow, key=best_flow.__getitem__)[:drops]:
        flow = solve(closed | {lane})
        plan = evaluate(problem, flow)
        if plan.cost < best.cost:
            best, best_flow = plan, flow
            closed.add(lane)
    for candidate in (
        _fill_shortages(problem, dict(best_flow), base, minimum),
        _single_source(problem, dict(best_flow), base, minimum),
    ):
        plan = evaluate(problem, candidate)
        if plan.cost < best.cost:
            best, best_flow = plan, candidate
    return best


def _single_source(
    problem: Problem, flow: dict[tuple[int, int], int], base: np.ndarray, minimum: int
) -> dict[tuple[int, int], int]:
    """One source that fills it all is preferred: for each sink, try replacing its lanes
    by the single cheapest source able to carry its whole need (one trip, no split)."""
    left = [s.quantity for s in problem.sources]
    for (i, _j), q in flow.items():
        left[i] -= q
    fixed = problem.costs.fixed_per_lane
    shortage = problem.costs.shortage_per_unit
    for j, t in enumerate(problem.sinks):
        mine = {lane: q for lane, q in flow.items() if lane[1] == j}
        now = sum(int(base[lane]) * q + fixed for lane, q in mine.items())
        now += (t.quantity - sum(mine.values())) * shortage
        want = _round_down(t.quantity, problem.case_pack)
        if want < minimum:
            continue
        best_i, best_cost = -1, now
        for i in range(len(problem.sources)):
            spare = left[i] + mine.get((i, j), 0)
            if spare < want:
                continue
            cost = int(base[i, j]) * want + fixed + (t.quantity - want) * shortage
            if cost < best_cost:
                best_i, best_cost = i, cost
        if best_i >= 0:
            for lane, q in mine.items():
                left[lane[0]] += q
                del flow[lane]
            flow[(best_i, j)] = want
            left[best_i] -= want
    return flow


def _fill_shortages(
    problem: Problem, flow: dict[tuple[int, int], int], base: np.ndarray, minimum: int
) -> dict[tuple[int, int], int]:
    """Banning under-minimum lanes can strand a need that one whole lane could meet:
    fill what is left from the cheapest source with enough spare, when that beats the
    shortage."""
    left = [s.quantity for s in problem.sources]
    got = [0] * len(problem.sinks)
    for (i, j), q in flow.items():
        left[i] -= q
        got[j] += q
    c = problem.costs
    for j, t in enumerate(problem.sinks):
        need = t.quantity - got[j]
        for i in np.argsort(base[:, j], kind="stable"):
            i = int(i)
            if need < minimum:
                break
            q = _round_down(min(need, left[i]), problem.case_pack)
            extra = 0 if (i, j) in flow else c.fixed_per_lane
            if q < minimum or int(base[i, j]) * q + extra >= c.shortage_per_unit * q:
                continue
            flow[(i, j)] = flow.get((i, j), 0) + q
            left[i] -= q
            need -= q
    return flow


def exact_min_cost_flow(problem: Problem) -> Plan:
    """Exact optimum without minimums and fixed costs, over every lane (dense)."""
    lanes = [(i, j) for i in range(len(problem.sources)) for j in range(len(problem.sinks))]
    if not lanes:
        return evaluate(problem, {})
    base = unit_costs(problem)
    flows = _solve_flow(problem, lanes, [int(base[i, j]) for i, j in lanes])
    return _evaluate_linear(problem, dict(zip(lanes, flows, strict=True)))


def plan_sku_linear(problem: Problem, *, k: int = 16) -> Plan:
    """The sparse-lane min-cost flow alone (no minimums, no fixed costs)."""
    lanes = candidate_lanes(problem, k)
    if not lanes:
        return evaluate(problem, {})
    base = unit_costs(problem)
    flows = _solve_flow(problem, lanes, [int(base[i, j]) for i, j in lanes])
    return _evaluate_linear(problem, dict(zip(lanes, flows, strict=True)))


def _evaluate_linear(problem: Problem, flows: dict[tuple[int, int], int]) -> Plan:
    """Cost without fixed lane costs (the pure transportation objective)."""
    linear = Problem(
        problem.sku,
        problem.sources,
        problem.sinks,
        problem.min_quantity,
        problem.case_pack,
        CostModel(
            problem.costs.per_unit_km,
            0,
            problem.costs.shortage_per_unit,
            problem.costs.expiring_bonus_per_rate,
        ),
    )
    return evaluate(linear, flows)


def exact_milp(problem: Problem, *, time_limit_s: float = 60.0) -> tuple[Plan, float]:
    """The exact problem with minimum quantities and fixed lane costs (SCIP through
    OR-Tools' linear solver wrapper), over every lane. Returns the best plan found and
    SCIP's proven lower bound on the optimum (equal to its cost when solved to the end),
    so a gap measured against the bound never flatters the heuristic."""
    n_src, n_snk = len(problem.sources), len(problem.sinks)
    base = unit_costs(problem)
    minimum = max(problem.min_quantity, problem.case_pack)
    pack = problem.case_pack
    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:
        raise RuntimeError("OR-Tools was built without SCIP")
    solver.SetTimeLimit(int(time_limit_s * 1000))
    packs: dict[tuple[int, int], Any] = {}
    used: dict[tuple[int, int], Any] = {}
    for i, s in enumerate(problem.sources):
        for j, t in enumerate(problem.sinks):
            cap = min(s.quantity, t.quantity) // pack
            if cap * pack < minimum:
                continue
            p = solver.IntVar(0, cap, f"p{i}_{j}")
            b = solver.BoolVar(f"u{i}_{j}")
            solver.Add(p * pack >= minimum * b)
            solver.Add(p <= cap * b)
            packs[(i, j)], used[(i, j)] = p, b
    for i, s in enumerate(problem.sources):
        row = [packs[(i, j)] for j in range(n_snk) if (i, j) in packs]
        if row:
            solver.Add(solver.Sum(row) * pack <= s.quantity)
    short = []
    for j, t in enumerate(problem.sinks):
        u = solver.IntVar(0, t.quantity, f"short{j}")
        col = [packs[(i, j)] for i in range(n_src) if (i, j) in packs]
        solver.Add(solver.Sum(col) * pack + u == t.quantity)
        short.append(u)
    solver.Minimize(
        solver.Sum([int(base[lane]) * pack * v for lane, v in packs.items()])
        + solver.Sum([problem.costs.fixed_per_lane * b for b in used.values()])
        + solver.Sum([problem.costs.shortage_per_unit * u for u in short])
    )
    status = solver.Solve()
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise RuntimeError(f"MILP for {problem.sku} found no solution ({status})")
    plan = evaluate(problem, {lane: round(v.solution_value()) * pack for lane, v in packs.items()})
    bound = plan.cost if status == pywraplp.Solver.OPTIMAL else solver.Objective().BestBound()
    return plan, float(bound)


def greedy_nearest(problem: Problem) -> Plan:
    """The naive rule: each short outlet takes from the nearest source with surplus."""
    base = unit_costs(problem)
    minimum = max(problem.min_quantity, problem.case_pack)
    left = [s.quantity for s in problem.sources]
    flows: dict[tuple[int, int], int] = {}
    dist = distances_km(problem.sources, problem.sinks) if problem.sources else None
    for j, t in enumerate(problem.sinks):
        need = t.quantity
        if dist is None:
            break
        for i in np.argsort(dist[:, j], kind="stable"):
            i = int(i)
            q = _round_down(min(left[i], need), problem.case_pack)
            if q < minimum or base[i, j] >= problem.costs.shortage_per_unit:
                continue
            flows[(i, j)] = q
            left[i] -= q
            need -= q
            if need < minimum:
                break
    return evaluate(problem, flows)
