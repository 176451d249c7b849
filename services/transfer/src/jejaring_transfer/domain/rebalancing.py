"""Network rebalancing: move surplus to where it will be short, at least cost, per sku.

The core is OR-Tools' min-cost flow over sparse candidate lanes (each short outlet sees
its k nearest sources and every supplier). Minimum transfer quantities and a fixed cost
per lane make the exact problem a MILP; `plan_sku` handles them with a tested heuristic:
slope scaling (the fixed cost is spread over the flow the lane carried last round) builds
plans, a local search over which lanes are open improves them, pricing each set of
lanes by a min-cost flow in which every open lane carries at least the minimum, and a
large neighbourhood search re-plans a few neighbouring sinks at a time exactly with
OR-Tools' CP-SAT.
`solve_exact` (SCIP or CP-SAT) and `greedy_nearest` exist to measure it against.

Costs are integer rupiah: transport per unit and km, a supplier's unit price, a fixed
cost per lane (a trip), and a penalty per unit left short (so shipping is preferred
whenever it is cheaper than a stockout).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ortools.graph.python import min_cost_flow
from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

EARTH_KM = 6371.0
POLISHED = 2  # fast slope scaling polishes this many of its rounds' flows, cheapest first


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


def unit_costs(problem: Problem, d: np.ndarray | None = None) -> np.ndarray:
    """Per-unit cost of every source -> sink lane (integer rupiah, never negative), from
    the distances `d` when the caller has them already."""
    c = problem.costs
    if d is None:
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


def _candidate_mask(cost: np.ndarray, suppliers: np.ndarray, k: int) -> np.ndarray:
    """Sparse lanes as a sources x sinks mask: each sink's k cheapest sources, each
    source's k cheapest sinks (a remote source still gets a way out), every supplier."""
    n_src, n_snk = cost.shape
    mask = np.zeros((n_src, n_snk), dtype=bool)
    if n_src == 0 or n_snk == 0:
        return mask
    mask[suppliers, :] = True
    if k >= n_src:
        mask[:, :] = True
        return mask
    rows = np.argpartition(cost, k - 1, axis=0)[:k]
    mask[rows, np.arange(n_snk)[None, :]] = True
    if k < n_snk:
        cols = np.argpartition(cost, k - 1, axis=1)[:, :k]
        mask[np.arange(n_src)[:, None], cols] = True
    else:
        mask[:, :] = True
    return mask


def candidate_lanes(problem: Problem, k: int) -> list[tuple[int, int]]:
    """Sparse lanes: each sink's k nearest sources, each source's k nearest sinks, plus
    every supplier."""
    if not problem.sources or not problem.sinks:
        return []
    suppliers = np.array([s.unit_price > 0 for s in problem.sources])
    li, lj = np.nonzero(_candidate_mask(unit_costs(problem), suppliers, max(k, 1)))
    return list(zip(li.tolist(), lj.tolist(), strict=True))


def _round_down(q: int, pack: int) -> int:
    return q - q % pack if pack > 1 else q


@dataclass(slots=True, eq=False)
class _Net:
    """A problem counted in case packs over its candidate lanes, ready for many flow solves.

    Nodes: sources 0..S-1, sinks S..S+T-1, `short` (S+T: supplies every pack left short,
    at the shortage penalty) and `excess` (S+T+1: takes the surplus nobody needs, free).
    """

    pack: int
    minimum: int  # packs a lane must carry if used
    a: np.ndarray  # packs each source can give
    b: np.ndarray  # packs each sink can take
    li: np.ndarray  # lane -> source
    lj: np.ndarray  # lane -> sink
    c: np.ndarray  # rupiah per pack on each lane
    cap: np.ndarray
    fixed: int  # rupiah per lane used
    short: int  # rupiah per pack left short
    constant: int  # shortage of the units no whole pack can fill
    arcs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # the non-lane arcs
    nodes: np.ndarray
    supplies: np.ndarray
    # Computed once per sku and shared by the greedy start and the final evaluation.
    dist: np.ndarray  # km, sources x sinks
    unit: np.ndarray  # rupiah per unit, sources x sinks (unit_costs)
    lane_of: np.ndarray  # sources x sinks -> lane index, -1 where there is no lane
    solved: int = 0  # arcs of every flow solved so far: the local search's effort spent

    def value(self, x: np.ndarray) -> int:
        """True objective of lane flows `x` (packs): transport, price, trips, shortage."""
        return int(
            self.constant
            + self.short * (int(self.b.sum()) - int(x.sum()))
            + int(self.c @ x)
            + self.fixed * int(np.count_nonzero(x))
        )

    def flow(self, sel: np.ndarray, cost: np.ndarray, forced: int = -1) -> np.ndarray:
        """Min-cost flow over the lanes `sel` at per-pack `cost`; flows of every lane.
        Lane `forced` (when >= 0, one of `sel`) carries at least the minimum."""
        assert forced < 0 or bool((sel == forced).any()), "the forced lane must be in sel"
        x = self._solve(sel, cost[sel], np.where(sel == forced, self.minimum, 0))
        if x is None:
            raise RuntimeError("min-cost flow found no flow")
        return x

    def bounded(self, sel: np.ndarray) -> np.ndarray | None:
        """The cheapest flow that uses exactly the lanes `sel`, each carrying at least the
        minimum, so the result is legal and its value is the true cost of opening those
        lanes. None when they cannot all carry the minimum."""
        return self._solve(sel, self.c[sel], np.full(sel.size, self.minimum))

    def _solve(self, sel: np.ndarray, cost: np.ndarray, low: np.ndarray) -> np.ndarray | None:
        """Min-cost flow over the lanes `sel` with lower bounds `low` (shipped up front, as
        min-cost flow takes a lower bound); None when the bounds cannot be met."""
        n_src = self.a.size
        supplies = self.supplies
        if low.any():
            supplies = supplies.copy()
            np.subtract.at(supplies, self.li[sel], low)
            np.add.at(supplies, n_src + self.lj[sel], low)
            # A source cannot give, nor a sink take, more than it has; otherwise the
            # short and excess nodes balance any supplies.
            if (supplies[:n_src] < 0).any() or (supplies[n_src : n_src + self.b.size] > 0).any():
                return None
        tails, heads, caps, costs = self.arcs
        self.solved += sel.size + tails.size
        smcf = min_cost_flow.SimpleMinCostFlow()
        smcf.add_arcs_with_capacity_and_unit_cost(
            np.concatenate((self.li[sel], tails)),
            np.concatenate((self.lj[sel] + n_src, heads)),
            np.concatenate((self.cap[sel] - low, caps)),
            np.concatenate((cost, costs)),
        )
        smcf.set_nodes_supplies(self.nodes, supplies)
        if smcf.solve() != smcf.OPTIMAL:
            return None
        x = np.zeros(self.c.size, dtype=np.int64)
        if sel.size:
            x[sel] = smcf.flows(np.arange(sel.size)) + low
        return x

    def feasible(self, sel: np.ndarray, cost: np.ndarray, forced: int = -1) -> np.ndarray:
        """`flow`, re-solved without the lanes that would carry less than the minimum
        (their units find another lane or stay short) until every used lane is legal."""
        for _ in range(16):
            x = self.flow(sel, cost, forced)
            small = (x > 0) & (x < self.minimum)
            if not small.any():
                return x
            sel = sel[~small[sel]]
        x[(x > 0) & (x < self.minimum)] = 0
        return x


def _net(problem: Problem, k: int) -> _Net:
    pack = max(problem.case_pack, 1)
    minimum = max(1, -(-problem.min_quantity // pack))
    supply = np.array([s.quantity for s in problem.sources], dtype=np.int64)
    demand = np.array([t.quantity for t in problem.sinks], dtype=np.int64)
    a, b = np.maximum(supply, 0) // pack, np.maximum(demand, 0) // pack
    c = problem.costs
    dist = distances_km(problem.sources, problem.sinks)
    unit = unit_costs(problem, dist)
    per_pack = unit * pack
    short = c.shortage_per_unit * pack
    suppliers = np.array([s.unit_price > 0 for s in problem.sources], dtype=bool)
    li, lj = np.nonzero(_candidate_mask(per_pack, suppliers, max(k, 1)))
    cap = np.minimum(a[li], b[lj])
    lane_cost = per_pack[li, lj]
    # A lane that cannot carry the minimum, or whose units cost more than leaving them
    # short even when it runs full, is never worth a trip.
    keep = (cap >= minimum) & (lane_cost * cap + c.fixed_per_lane < short * cap)
    li, lj, cap, lane_cost = li[keep], lj[keep], cap[keep], lane_cost[keep]
    n_src, n_snk = a.size, b.size
    short_node, excess_node = n_src + n_snk, n_src + n_snk + 1
    tails = np.concatenate((np.arange(n_src), np.full(n_snk, short_node), [short_node])).astype(
        np.int64
    )
    heads = np.concatenate(
        (np.full(n_src, excess_node), n_src + np.arange(n_snk), [excess_node])
    ).astype(np.int64)
    caps = np.concatenate((a, b, [b.sum()])).astype(np.int64)
    costs = np.concatenate(
        (np.zeros(n_src, dtype=np.int64), np.full(n_snk, short, dtype=np.int64), [0])
    ).astype(np.int64)
    supplies = np.concatenate((a, -b, [b.sum(), -a.sum()])).astype(np.int64)
    constant = int((np.maximum(demand, 0) - b * pack).sum()) * c.shortage_per_unit
    lane_of = np.full(unit.shape, -1, dtype=np.int64)
    lane_of[li, lj] = np.arange(li.size)
    return _Net(
        pack,
        minimum,
        a,
        b,
        li.astype(np.int64),
        lj.astype(np.int64),
        lane_cost.astype(np.int64),
        cap.astype(np.int64),
        c.fixed_per_lane,
        short,
        constant,
        (tails, heads, caps, costs),
        np.arange(supplies.size, dtype=np.int64),
        supplies,
        dist,
        unit,
        lane_of,
    )


class _Search:
    """Best plan seen so far, over the lane flows of one `_Net`, and the local search
    over sets of open lanes that improves it.

    The search moves between lane sets, each priced by `_Net.bounded` (the cheapest
    legal flow that uses exactly those lanes): open a lane, close one, or move one's
    trip to a closed lane at the same source or sink. The arcs of every flow it solves
    (`_Net.solved`) count against `limit`, which bounds its time whatever the sku's size."""

    def __init__(self, net: _Net, width: int = 16) -> None:
        self.net = net
        self.width = width  # closed lanes tried per add step
        self.x = np.zeros(net.c.size, dtype=np.int64)
        self.value = net.value(self.x)
        self.limit = 0  # the search stops once `net.solved` reaches this

    def offer(self, x: np.ndarray) -> None:
        """Keep `x` if it is legal (fast slope scaling's raw flows may not be) and better."""
        if ((x > 0) & (x < self.net.minimum)).any():
            return
        v = self.net.value(x)
        if v < self.value:
            self.x, self.value = x, v

    def polish(self, x: np.ndarray) -> np.ndarray:
        """The best flow over the lanes `x` opened: trips are paid once a lane is open,
        so only the per-pack costs decide how much each carries."""
        self.offer(x)
        y = self.net.feasible(np.flatnonzero(x), self.net.c)
        self.offer(y)
        return y

    def slope_scaling(
        self, slope: np.ndarray, rounds: int, *, fast: bool = False, polished: int | None = None
    ) -> None:
        """Dynamic slope scaling: each lane's per-pack cost carries its trip spread over
        what it carried last round, until the flows stop changing.

        `fast` (network mode) solves each round once, minimums ignored (a lane carrying
        little gets a steep slope next round anyway), and makes only the polish legal:
        the bans then re-solve over the few open lanes, not over every candidate."""
        net = self.net
        everything = np.arange(net.c.size)
        seen: set[bytes] = set()
        rough: list[tuple[int, np.ndarray]] = []
        for _ in range(rounds):
            x = net.flow(everything, slope) if fast else net.feasible(everything, slope)
            key = x.tobytes()
            if key in seen:
                break
            seen.add(key)
            if fast:
                rough.append((net.value(x), x))
            else:
                self.polish(x)
            used = x > 0
            slope[used] = net.c[used] + -(-net.fixed // x[used])
        # Polishing is most of a fast run's solves: network mode polishes only the flows
        # that already look good.
        rough.sort(key=lambda item: item[0])
        for _, x in rough[:polished]:
            self.polish(x)

    def _price(self, sel: np.ndarray) -> tuple[np.ndarray, int] | None:
        """One move's lanes priced by `_Net.bounded`."""
        y = self.net.bounded(sel)
        return None if y is None else (y, self.net.value(y))

    def spent(self) -> bool:
        return self.net.solved >= self.limit

    def potentials(self, x: np.ndarray) -> np.ndarray:
        """Node potentials of `x`, the bounded flow over its open lanes: shortest
        distances in its residual network (Bellman-Ford from a virtual root; an open
        lane can give back only down to the minimum). `c + d[i] - d[j] < 0` marks a
        closed lane (i, j) that would lower the per-pack costs if opened."""
        net = self.net
        n_src, n_snk = net.a.size, net.b.size
        sel = np.flatnonzero(x)
        tails, heads, caps, costs = net.arcs
        out = np.bincount(net.li[sel], weights=x[sel], minlength=n_src).astype(np.int64)
        got = np.bincount(net.lj[sel], weights=x[sel], minlength=n_snk).astype(np.int64)
        lacking = net.b - got
        static_flow = np.concatenate((net.a - out, lacking, [int(net.b.sum() - lacking.sum())]))
        t = np.concatenate((net.li[sel], tails))
        h = np.concatenate((net.lj[sel] + n_src, heads))
        u = np.concatenate((net.cap[sel], caps))
        w = np.concatenate((net.c[sel], costs))
        f = np.concatenate((x[sel], static_flow))
        low = np.concatenate((np.full(sel.size, net.minimum), np.zeros(caps.size, np.int64)))
        fwd, bwd = f < u, f > low
        rt = np.concatenate((t[fwd], h[bwd]))
        rh = np.concatenate((h[fwd], t[bwd]))
        rw = np.concatenate((w[fwd], -w[bwd]))
        d = np.zeros(net.nodes.size, dtype=np.int64)
        # x is optimal over its lanes, so there is no negative cycle; the cap on rounds
        # only guards a flow that is not.
        for _ in range(net.nodes.size + 1):
            before = d.copy()
            np.minimum.at(d, rh, d[rt] + rw)
            if np.array_equal(before, d):
                break
        return d

    def _add(self, x: np.ndarray, v: int) -> tuple[np.ndarray, int] | None:
        """The best of the `width` closed lanes the potentials rate best (per-pack saving
        over the lane's capacity, less its trip), if it lowers the cost."""
        net = self.net
        d = self.potentials(x)
        rc = net.c + d[net.li] - d[net.lj + net.a.size]
        gain = -rc * net.cap - net.fixed
        order = np.flatnonzero((x == 0) & (gain > 0))
        order = order[np.argsort(-gain[order], kind="stable")][: self.width]
        open_lanes = np.flatnonzero(x)
        best: tuple[np.ndarray, int] | None = None
        for lane in order.tolist():
            if self.spent():
                break
            lanes = np.append(open_lanes, lane)
            for priced in (self._price(lanes), self._reroute(lanes, lane)):
                if priced is not None and priced[1] < (v if best is None else best[1]):
                    best = priced
        return best

    def _reroute(self, sel: np.ndarray, lane: int) -> tuple[np.ndarray, int] | None:
        """The lanes `sel` at their per-pack costs, only `lane` held to the minimum: the
        lanes the flow empties close, those left under the minimum are closed too, and
        what stays open is priced by `_Net.bounded`. One lane in, any number out."""
        y = self.net.feasible(sel, self.net.c, lane)
        return self._price(np.flatnonzero(y))

    def _drop(self, x: np.ndarray, v: int) -> tuple[np.ndarray, int] | None:
        """The first open lane (least loaded first) whose closing lowers the cost."""
        open_lanes = np.flatnonzero(x)
        for lane in open_lanes[np.argsort(x[open_lanes], kind="stable")].tolist():
            if self.spent():
                break
            priced = self._price(open_lanes[open_lanes != lane])
            if priced is not None and priced[1] < v:
                return priced
        return None

    def _swap(self, x: np.ndarray, v: int) -> tuple[np.ndarray, int] | None:
        """The first move of an open lane's trip (least loaded first) to a closed lane at
        the same sink or source that lowers the cost: one trip for another, which adds
        and drops alone cannot reach when neither pays by itself."""
        net = self.net
        open_lanes = np.flatnonzero(x)
        closed = x == 0
        for lane in open_lanes[np.argsort(x[open_lanes], kind="stable")].tolist():
            near = closed & ((net.lj == net.lj[lane]) | (net.li == net.li[lane]))
            others = open_lanes[open_lanes != lane]
            for other in np.flatnonzero(near).tolist():
                if self.spent():
                    return None
                lanes = np.append(others, other)
                for priced in (self._price(lanes), self._reroute(lanes, other)):
                    if priced is not None and priced[1] < v:
                        return priced
        return None

    def descend(self, x: np.ndarray) -> None:
        """Local search from the legal flow `x`: adds, then drops, then swaps, taking the
        first kind that improves, until none does or the effort is spent. Offers every
        plan it reaches."""
        priced = self._price(np.flatnonzero(x))
        if priced is None:
            return
        x, v = priced
        self.offer(x)
        while not self.spent():
            step = self._add(x, v) or self._drop(x, v) or self._swap(x, v)
            if step is None:
                return
            x, v = step
            self.offer(x)

    def neighbourhood(self, sinks: np.ndarray, time_limit: float) -> bool:
        """Large neighbourhood search: the lanes into `sinks` re-planned exactly by
        CP-SAT, everything else fixed (sources give them only what the other sinks leave).
        One worker, a fixed seed and a deterministic time limit: the same plan on any
        machine with the same OR-Tools build. Kept when it lowers the cost. False when
        there was nothing to solve (no lane into these sinks can carry the minimum)."""
        net = self.net
        x = self.x
        inside = np.isin(net.lj, sinks)
        outside = np.flatnonzero(~inside)
        given = np.bincount(net.li[outside], weights=x[outside], minlength=net.a.size)
        left = net.a - given.astype(np.int64)
        lanes = np.flatnonzero(inside)
        ub = np.minimum(net.cap[lanes], left[net.li[lanes]])
        # A lane the plan uses carries at least the minimum and at most `ub`, so the lanes
        # dropped here carry nothing and the current plan stays a valid hint.
        lanes, ub = lanes[ub >= net.minimum], ub[ub >= net.minimum]
        if lanes.size == 0:
            return False
        model = cp_model.CpModel()
        packs = [model.new_int_var(0, int(u), "") for u in ub.tolist()]
        used = [model.new_bool_var("") for _ in packs]
        for p, b, u in zip(packs, used, ub.tolist(), strict=True):
            model.add(p >= net.minimum * b)
            model.add(p <= u * b)
        by_source: dict[int, list[cp_model.IntVar]] = {}
        by_sink: dict[int, list[cp_model.IntVar]] = {}
        for p, i, j in zip(packs, net.li[lanes].tolist(), net.lj[lanes].tolist(), strict=True):
            by_source.setdefault(i, []).append(p)
            by_sink.setdefault(j, []).append(p)
        for i, row in by_source.items():
            model.add(sum(row) <= int(left[i]))
        for j, col in by_sink.items():
            model.add(sum(col) <= int(net.b[j]))
        # Each pack delivered saves its shortage penalty.
        model.minimize(
            sum(int(c) * p for c, p in zip((net.c[lanes] - net.short).tolist(), packs, strict=True))
            + net.fixed * sum(used)
        )
        for p, b, q in zip(packs, used, x[lanes].tolist(), strict=True):
            model.add_hint(p, q)
            model.add_hint(b, int(q > 0))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = 0
        solver.parameters.max_deterministic_time = time_limit
        if solver.solve(model) in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            y = x.copy()
            y[inside] = 0
            y[lanes] = [solver.value(p) for p in packs]
            self.offer(y)
        return True

    def neighbourhoods(
        self,
        where: np.ndarray,
        rounds: int,
        size: int,
        time_limit: float,
        rng: np.random.Generator,
    ) -> None:
        """Up to `rounds` neighbourhood solves, each over a sink and its `size` nearest
        sinks (`where`: the sinks' coordinates), centres in a random order. A pass over
        every centre that finds nothing better grows the neighbourhoods by half, until a
        pass over the whole problem finds nothing either."""
        n = where.shape[0]
        size = min(max(size, 1), n)
        order: dict[int, np.ndarray] = {}  # a centre's sinks, nearest first, once sorted
        while rounds > 0:
            before = self.value
            seen: set[bytes] = set()
            for centre in rng.permutation(n).tolist():
                if rounds <= 0:
                    return
                if centre not in order:
                    order[centre] = _nearest(where, centre)
                sinks = np.sort(order[centre][:size])
                if sinks.tobytes() in seen:
                    continue  # the same sinks from another centre: the same solve
                seen.add(sinks.tobytes())
                if self.neighbourhood(sinks, time_limit):
                    rounds -= 1
            if self.value >= before:
                if size >= n:
                    return
                size = min(n, size + max(1, size // 2))

    def kick(self, rng: np.random.Generator, share: float) -> None:
        """Iterated local search: close a random `share` of the best plan's lanes, let
        the flow rebuild around them (the kept lanes at their per-pack cost, the others
        with their trip spread over their capacity), and descend again from there. The
        best plan is kept whatever that finds."""
        net = self.net
        open_lanes = np.flatnonzero(self.x)
        if open_lanes.size == 0:
            return
        banned = rng.random(open_lanes.size) < share
        slope = net.c + np.ceil(net.fixed / net.cap).astype(np.int64)
        slope[open_lanes[~banned]] = net.c[open_lanes[~banned]]
        keep = np.ones(net.c.size, dtype=bool)
        keep[open_lanes[banned]] = False
        self.descend(self.polish(net.feasible(np.flatnonzero(keep), slope)))


def plan_sku(
    problem: Problem,
    *,
    k: int = 16,
    rounds: int = 12,
    effort: int = 1_000_000,
    restarts: int = 20,
    patience: int = 5,
    width: int = 16,
    share: float = 0.3,
    seed: int = 0,
    fast: bool = False,
    greedy: bool = True,
    lns_rounds: int = 60,
    lns_size: int = 4,
    lns_time: float = 0.05,
) -> Plan:
    """The heuristic plan, every solve an OR-Tools min-cost flow.

    Minimum quantities and case packs are exact: the flow counts whole packs, and every
    lane a plan uses carries at least the minimum. Construction: dynamic slope scaling
    (a lane's trip spread over the packs it carried last round) from several initial
    slopes (the trip spread over the lane's capacity, over half of it, over the
    minimum), plus greedy nearest matching; each flow is polished (lanes under the
    minimum closed, the best flow over the rest). Improvement: local search over the
    set of open lanes (adds, drops, swaps, each priced by a bounded flow solve), then up
    to `restarts` kicks that close a random `share` of the best plan's lanes and search
    again, until the search has solved flows over `effort` arcs in all (or `patience` kicks
    in a row found nothing better). Last, a large neighbourhood search: up to
    `lns_rounds` times, the lanes into a sink and its nearest sinks (`lns_size` of them
    at first, more once a pass over every sink finds nothing) are re-planned exactly by
    OR-Tools' CP-SAT with the rest of the plan fixed, each solve bounded by `lns_time`
    units of CP-SAT's deterministic time. The best plan seen is returned.

    `fast` (what `plan_network` uses): one slope-scaling schedule whose rounds ignore
    the minimum, legal only once polished; with `effort=0` no local search,
    a few ms per sku."""
    net = _net(problem, k)
    search = _Search(net, width)
    if net.c.size:
        rng = np.random.default_rng(seed)
        for divisor in _initial_divisors(net, fast):
            start = net.c + np.ceil(net.fixed / divisor).astype(np.int64)
            search.slope_scaling(
                start.copy(), rounds, fast=True, polished=POLISHED if fast else None
            )
            if not fast:
                # Bans inside the rounds find other plans on some instances.
                search.slope_scaling(start, rounds)
        if greedy:
            # Nearest-first matching is a good start where trips dominate (dense clusters).
            search.polish(_lane_flows(net, _greedy_flows(problem, net.unit, net.dist)))
        search.limit = net.solved + effort  # construction's solves are not the search's
        if effort > 0:
            search.descend(search.x)
            idle = 0
            for _ in range(restarts):
                if search.spent() or idle >= patience:
                    break
                before = search.value
                search.kick(rng, share)
                idle = idle + 1 if search.value >= before else 0
        if lns_rounds > 0:
            where = np.array([(t.lat, t.lon) for t in problem.sinks], dtype=np.float64)
            search.neighbourhoods(where, lns_rounds, lns_size, lns_time, rng)
    return _plan_of(problem, net, search.x)


def _nearest(where: np.ndarray, centre: int) -> np.ndarray:
    """The points of `where` by distance from `centre` (itself first); flat-earth degrees
    suffice to order neighbours a few km apart."""
    squared = ((where - where[centre]) ** 2).sum(axis=1)
    return np.argsort(squared, kind="stable")


def _initial_divisors(net: _Net, fast: bool) -> list[np.ndarray]:
    """What each slope-scaling schedule spreads a lane's trip over at first: its
    capacity (optimistic, a full lane), and unless `fast` half of it and the minimum
    (steep: few, well-loaded lanes)."""
    cap = net.cap.astype(np.float64)
    if fast:
        return [cap]
    return [cap, np.maximum(cap / 2, net.minimum), np.full(cap.size, float(net.minimum))]


NETWORK_OPTIONS: dict[str, Any] = {
    "k": 8,
    "rounds": 8,
    "effort": 0,
    "restarts": 0,
    "lns_rounds": 0,
    "fast": True,
    "greedy": True,
}
"""`plan_sku` options `plan_network` uses by default: one fast slope-scaling run per sku
and no local search (a few ms per sku), so thousands of skus plan in well under a minute
on two cores."""


def plan_network(
    problems: Sequence[Problem],
    *,
    workers: int | None = None,
    chunk: int = 50,
    planner: Callable[..., Plan] | None = None,
    **options: Any,
) -> list[Plan]:
    """Plans for many skus (same order), spread over `workers` processes (default: the
    CPUs this process may use). `planner` defaults to `plan_sku` with `NETWORK_OPTIONS`
    (overridden by `options`). CPU-bound and blocking: async callers run it with
    asyncio.to_thread."""
    if planner is None:
        planner, options = plan_sku, {**NETWORK_OPTIONS, **options}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    parts = [list(problems[i : i + chunk]) for i in range(0, len(problems), chunk)]
    # More processes than cores or chunks only adds start-up and context switches.
    workers = min(workers or cores, cores, len(parts))
    if workers <= 1:
        return [planner(p, **options) for p in problems]
    # Spawned, not forked: the caller may be a server with threads and open sockets.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        done = pool.map(_plan_chunk, parts, [planner] * len(parts), [options] * len(parts))
        return [plan for plans in done for plan in plans]


def _plan_chunk(
    problems: list[Problem], planner: Callable[..., Plan], options: dict[str, Any]
) -> list[Plan]:
    return [planner(p, **options) for p in problems]


def _lane_flows(net: _Net, flows: dict[tuple[int, int], int]) -> np.ndarray:
    """Unit flows per (source, sink) as pack flows over the net's lanes (flows off its
    lanes are left out, which keeps them legal: only less is sent)."""
    x = np.zeros(net.c.size, dtype=np.int64)
    for (i, j), q in flows.items():
        lane = net.lane_of[i, j]
        if lane >= 0:
            x[lane] = q // net.pack
    return x


def _unit_flows(net: _Net, x: np.ndarray) -> dict[tuple[int, int], int]:
    """Pack flows `x` over the net's lanes as units per (source, sink) used."""
    return {
        (int(net.li[lane]), int(net.lj[lane])): int(x[lane]) * net.pack
        for lane in np.flatnonzero(x)
    }


def _plan_of(problem: Problem, net: _Net, x: np.ndarray) -> Plan:
    return evaluate(problem, _unit_flows(net, x), net.unit)


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


def evaluate(
    problem: Problem, flows: dict[tuple[int, int], int], cost: np.ndarray | None = None
) -> Plan:
    """The true cost of a set of lane flows: transport, price, fixed costs, shortage.
    `cost`: the problem's unit_costs, when the caller has them already."""
    if cost is None:
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


@dataclass(frozen=True, slots=True)
class Exact:
    """A MILP solver's answer: its best plan and its proven lower bound on the optimum."""

    plan: Plan
    bound: float
    proven: bool  # the plan is optimal (the bound equals its cost)


def solve_exact(
    problem: Problem,
    *,
    time_limit_s: float = 60.0,
    hint: Plan | None = None,
    solver: str = "SCIP",
    workers: int = 2,
) -> Exact:
    """The exact problem with minimum quantities and fixed lane costs, over every lane,
    counted in case packs, with the tight linking `packs <= min(supply, demand) * used`:
    `solver` "SCIP" (OR-Tools' linear solver wrapper) or "CP-SAT" (`workers` threads; it
    finds better plans and proves some small instances SCIP does not). `hint` (e.g. the
    heuristic's plan) only seeds the search; the bound is the solver's own, so a gap
    measured against it never flatters the heuristic."""
    if solver == "CP-SAT":
        return _solve_cp_sat(problem, time_limit_s, hint, workers)
    if solver != "SCIP":
        raise ValueError(f"unknown solver {solver!r}")
    n_src, n_snk = len(problem.sources), len(problem.sinks)
    base = unit_costs(problem)
    minimum = max(problem.min_quantity, problem.case_pack)
    pack = problem.case_pack
    mip = pywraplp.Solver.CreateSolver("SCIP")
    if mip is None:
        raise RuntimeError("OR-Tools was built without SCIP")
    mip.SetTimeLimit(int(time_limit_s * 1000))
    packs: dict[tuple[int, int], Any] = {}
    used: dict[tuple[int, int], Any] = {}
    for i, s in enumerate(problem.sources):
        for j, t in enumerate(problem.sinks):
            cap = min(s.quantity, t.quantity) // pack
            if cap * pack < minimum:
                continue
            p = mip.IntVar(0, cap, f"p{i}_{j}")
            b = mip.BoolVar(f"u{i}_{j}")
            mip.Add(p * pack >= minimum * b)
            mip.Add(p <= cap * b)
            packs[(i, j)], used[(i, j)] = p, b
    for i, s in enumerate(problem.sources):
        row = [packs[(i, j)] for j in range(n_snk) if (i, j) in packs]
        if row:
            mip.Add(mip.Sum(row) * pack <= s.quantity)
    short = []
    for j, t in enumerate(problem.sinks):
        u = mip.IntVar(0, t.quantity, f"short{j}")
        col = [packs[(i, j)] for i in range(n_src) if (i, j) in packs]
        mip.Add(mip.Sum(col) * pack + u == t.quantity)
        short.append(u)
    mip.Minimize(
        mip.Sum([int(base[lane]) * pack * v for lane, v in packs.items()])
        + mip.Sum([problem.costs.fixed_per_lane * b for b in used.values()])
        + mip.Sum([problem.costs.shortage_per_unit * u for u in short])
    )
    if hint is not None:
        index = {s.id: i for i, s in enumerate(problem.sources)}
        jndex = {t.id: j for j, t in enumerate(problem.sinks)}
        sent = {(index[ln.source], jndex[ln.sink]): ln.quantity // pack for ln in hint.lines}
        variables = [v for lane in packs for v in (packs[lane], used[lane])]
        values = [
            float(x) for lane in packs for x in (sent.get(lane, 0), int(sent.get(lane, 0) > 0))
        ]
        mip.SetHint(variables, values)
    status = mip.Solve()
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise RuntimeError(f"MILP for {problem.sku} found no solution ({status})")
    plan = evaluate(problem, {lane: round(v.solution_value()) * pack for lane, v in packs.items()})
    proven = status == pywraplp.Solver.OPTIMAL
    bound = float(plan.cost) if proven else float(mip.Objective().BestBound())
    return Exact(plan, min(bound, float(plan.cost)), proven)


def _solve_cp_sat(problem: Problem, time_limit_s: float, hint: Plan | None, workers: int) -> Exact:
    """`solve_exact`'s model in CP-SAT (integer costs, so its bound is exact too). Kept
    apart from `_Search.neighbourhood`'s model on purpose: it is the yardstick the
    planner is measured against, so it shares none of the planner's code."""
    base = unit_costs(problem)
    pack = problem.case_pack
    minimum = max(problem.min_quantity, pack)
    model = cp_model.CpModel()
    packs: dict[tuple[int, int], cp_model.IntVar] = {}
    used: dict[tuple[int, int], cp_model.IntVar] = {}
    for i, s in enumerate(problem.sources):
        for j, t in enumerate(problem.sinks):
            cap = min(s.quantity, t.quantity) // pack
            if cap * pack < minimum:
                continue
            p = model.new_int_var(0, cap, f"p{i}_{j}")
            b = model.new_bool_var(f"u{i}_{j}")
            model.add(p * pack >= minimum * b)
            model.add(p <= cap * b)
            packs[(i, j)], used[(i, j)] = p, b
    for i, s in enumerate(problem.sources):
        row = [v for (si, _), v in packs.items() if si == i]
        if row:
            model.add(sum(row) * pack <= s.quantity)
    short = []
    for j, t in enumerate(problem.sinks):
        u = model.new_int_var(0, max(t.quantity, 0), f"short{j}")
        model.add(sum(v for (_, sj), v in packs.items() if sj == j) * pack + u == t.quantity)
        short.append(u)
    model.minimize(
        sum(int(base[lane]) * pack * v for lane, v in packs.items())
        + problem.costs.fixed_per_lane * sum(used.values())
        + problem.costs.shortage_per_unit * sum(short)
    )
    if hint is not None:
        index = {s.id: i for i, s in enumerate(problem.sources)}
        jndex = {t.id: j for j, t in enumerate(problem.sinks)}
        sent = {(index[ln.source], jndex[ln.sink]): ln.quantity // pack for ln in hint.lines}
        for lane, v in packs.items():
            model.add_hint(v, sent.get(lane, 0))
            model.add_hint(used[lane], int(sent.get(lane, 0) > 0))
    cp = cp_model.CpSolver()
    cp.parameters.max_time_in_seconds = time_limit_s
    cp.parameters.num_workers = workers
    status = cp.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT for {problem.sku} found no solution ({status})")
    plan = evaluate(problem, {lane: cp.value(v) * pack for lane, v in packs.items()})
    proven = status == cp_model.OPTIMAL
    bound = float(plan.cost) if proven else float(cp.best_objective_bound)
    return Exact(plan, min(bound, float(plan.cost)), proven)


def greedy_nearest(problem: Problem) -> Plan:
    """The naive rule: each short outlet takes from the nearest source with surplus."""
    return evaluate(problem, _greedy_flows(problem))


def _greedy_flows(
    problem: Problem, base: np.ndarray | None = None, dist: np.ndarray | None = None
) -> dict[tuple[int, int], int]:
    """`base` and `dist`: the problem's unit_costs and distances_km, when known."""
    flows: dict[tuple[int, int], int] = {}
    if not problem.sources:
        return flows
    if dist is None:
        dist = distances_km(problem.sources, problem.sinks)
    if base is None:
        base = unit_costs(problem, dist)
    minimum = max(problem.min_quantity, problem.case_pack)
    left = [s.quantity for s in problem.sources]
    nearest = np.argsort(dist, axis=0, kind="stable").T.tolist()  # per sink, nearest first
    for j, t in enumerate(problem.sinks):
        need = t.quantity
        for i in nearest[j]:
            q = _round_down(min(left[i], need), problem.case_pack)
            if q < minimum or base[i, j] >= problem.costs.shortage_per_unit:
                continue
            flows[(i, j)] = q
            left[i] -= q
            need -= q
            if need < minimum:
                break
    return flows
