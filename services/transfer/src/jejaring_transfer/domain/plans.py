"""Rebalancing plans from transfer's projections: pure code, no I/O.

A `Snapshot` is what the projections know (outlets, stock levels, supplier offers,
products). `propose` turns it into one planner `Problem` per sku, solves them with
`rebalancing.plan_sku` and returns the plan's lines and totals:

- sinks: active or at-risk outlets whose available stock (plus what open restock requests
  will still bring) is at or below their reorder point now, or will be within the horizon
  at their daily rate when it is known; each asks for enough to reach its maximum (or,
  without a known maximum, the par of twice the reorder point, as auto-restock does).
- sources: an outlet's stock above its maximum (never below its reorder point; an outlet
  whose maximum is unknown has never been in surplus and gives nothing), and every live
  supplier offer (what is left of it, at its unit price).
- priority: at-risk outlets are planned first and the others get what is left; when
  `max_lines` cuts the plan, at-risk outlets and pareto A items keep their lines first
  (the matching's rule).

The planner needs coordinates for every source and sink: an outlet without them is put at
the centre of the outlets that have them, and a supplier (no location in the projections)
at the centre of the sku's sinks, so its cost is mostly its price.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from . import matching as m
from .rebalancing import CostModel, Plan, Problem, Sink, Source, plan_sku

SINK_STATUSES = ("active", "at_risk")
SOURCE_STATUSES = ("active", "at_risk")


@dataclass(frozen=True)
class Level:
    """One outlet's level of a sku, as the projection knows it."""

    outlet_id: str
    sku: str
    available: int
    """Projected available minus what proposed outlet legs are about to reserve."""
    reorder_point: int
    maximum: int | None = None
    daily_rate: float | None = None
    incoming: int = 0
    """Units open restock requests to this outlet will still bring."""


@dataclass(frozen=True)
class Snapshot:
    outlets: Mapping[str, m.Outlet]
    levels: Sequence[Level]
    offers: Sequence[m.Offer]
    """Live offers, reduced by what live supplier legs already hold."""
    products: Mapping[str, m.Product]
    now: datetime


@dataclass(frozen=True)
class PlanLine:
    sku: str
    source_kind: Literal["outlet", "supplier"]
    source_id: str
    offer_id: str | None
    outlet_id: str
    """The sink: the outlet that receives."""
    quantity: int
    cost: int
    cover_after_days: float | None
    """The sink's days of cover once every line of the plan to it has arrived."""


@dataclass(frozen=True)
class Proposal:
    lines: tuple[PlanLine, ...]
    units: int
    cost: int
    stockouts_avoided: int
    short: int


@dataclass(frozen=True)
class _SourceRef:
    kind: Literal["outlet", "supplier"]
    source_id: str
    offer_id: str | None
    min_order: int


Solver = Callable[[Problem], Plan]


def search_solver(effort: int, lns_rounds: int) -> Solver:
    """`plan_sku` with its local search bounded at `effort` and at most `lns_rounds`
    neighbourhood solves (the plans API passes its `plan_search_effort` and
    `plan_lns_rounds`)."""
    return functools.partial(plan_sku, effort=effort, lns_rounds=lns_rounds)


# -- who is short, who can give ----------------------------------------------------------------


def par(level: Level) -> int:
    """The level a sink is brought up to: its maximum, else twice its reorder point."""
    floor = level.reorder_point + 1
    if level.maximum is not None and level.maximum > 0:
        return max(level.maximum, floor)
    return max(2 * level.reorder_point, floor)


def shortfall(level: Level, horizon_days: int) -> int:
    """Units a sink needs to reach its par, or 0 when it is not (and will not be within the
    horizon) at or below its reorder point. A level with neither a reorder point nor a
    maximum is not stocked there: never short."""
    if level.reorder_point <= 0 and not level.maximum:
        return 0
    have = level.available + level.incoming
    projected = have - (level.daily_rate or 0.0) * horizon_days
    if projected > level.reorder_point:
        return 0
    return max(0, par(level) - have)


def surplus(level: Level) -> int:
    """What a donor can give: its stock above its maximum, never below its reorder point."""
    if level.maximum is None:
        return 0
    return max(0, level.available - max(level.maximum, level.reorder_point))


def lapsed(
    lines: Sequence[tuple[str, PlanLine]], snapshot: Snapshot, retired: set[str]
) -> list[tuple[str, str]]:
    """Lines of a plan that no longer hold at approval, with why: the projections moved on
    since the proposal (a plan stays approvable for `plan_stale_after_s`).

    - `outlet_closed`: the receiving outlet is no longer active or at risk;
    - `product_retired`, `product_changed` (the quantity is no longer whole case packs of
      at least the minimum transfer quantity);
    - `already_covered`: what the outlet holds plus what open requests will bring (another
      plan approved since, auto-restock) reaches its par already, counting the lines
      before it in this approval;
    - `source_unavailable`: the donor can no longer give the line's quantity without going
      below its reorder point, or the offer's remainder is short, lapsed or withdrawn,
      counting what the lines before it in this approval take.

    The snapshot's `incoming` must not count requests of this approval (read it first)."""
    levels = {(lv.outlet_id, lv.sku): lv for lv in snapshot.levels}
    offers = {o.offer_id: o for o in snapshot.offers}
    coming: dict[tuple[str, str], int] = {}
    taken: dict[tuple[str, str], int] = {}
    out: list[tuple[str, str]] = []
    for line_id, line in lines:
        sink = (line.outlet_id, line.sku)
        product = snapshot.products.get(line.sku)
        outlet = snapshot.outlets.get(line.outlet_id)
        level = levels.get(sink)
        if outlet is None or outlet.status not in SINK_STATUSES:
            out.append((line_id, "outlet_closed"))
            continue
        if line.sku in retired:
            out.append((line_id, "product_retired"))
            continue
        pack, least = (product.case_pack, product.min_transfer_qty) if product else (1, 1)
        if line.quantity % max(pack, 1) or line.quantity < least:
            out.append((line_id, "product_changed"))
            continue
        have = 0 if level is None else level.available + level.incoming + coming.get(sink, 0)
        if level is not None and have >= par(level):
            out.append((line_id, "already_covered"))
            continue
        if line.source_kind == "outlet":
            source = (line.source_id, line.sku)
            donor = levels.get(source)
            spare = 0 if donor is None else donor.available - donor.reorder_point
            donor_ok = donor is not None and (
                (o := snapshot.outlets.get(line.source_id)) is not None
                and o.status in SOURCE_STATUSES
            )
            if not donor_ok or spare - taken.get(source, 0) < line.quantity:
                out.append((line_id, "source_unavailable"))
                continue
        else:
            source = (line.offer_id or line.source_id, line.sku)
            offer = offers.get(line.offer_id or "")
            if (
                offer is None
                or (offer.valid_until is not None and offer.valid_until <= snapshot.now)
                or offer.quantity - taken.get(source, 0) < line.quantity
            ):
                out.append((line_id, "source_unavailable"))
                continue
        taken[source] = taken.get(source, 0) + line.quantity
        coming[sink] = coming.get(sink, 0) + line.quantity
    return out


def _centre(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    if not points:
        return (0.0, 0.0)
    return (
        sum(p[0] for p in points) / len(points),
        sum(p[1] for p in points) / len(points),
    )


def _place(outlet: m.Outlet, default: tuple[float, float]) -> tuple[float, float]:
    if outlet.lat is None or outlet.lon is None:
        return default
    return (outlet.lat, outlet.lon)


def _pareto_rank(product: m.Product) -> int:
    return m.PARETO_RANK.get(product.pareto_class, 2)


# -- the plan ------------------------------------------------------------------------------------


def propose(
    snapshot: Snapshot,
    *,
    horizon_days: int,
    max_lines: int,
    costs: CostModel | None = None,
    solve: Solver = plan_sku,
) -> Proposal:
    """The plan for every sku of the snapshot (CPU-heavy: callers run it off the event
    loop)."""
    costs = costs or CostModel()
    known = [
        (o.lat, o.lon) for o in snapshot.outlets.values() if o.lat is not None and o.lon is not None
    ]
    default = _centre(known)
    by_sku: dict[str, list[Level]] = {}
    for level in snapshot.levels:
        by_sku.setdefault(level.sku, []).append(level)
    offers_by_sku: dict[str, list[m.Offer]] = {}
    for offer in snapshot.offers:
        live = offer.valid_until is None or offer.valid_until > snapshot.now
        if live and offer.quantity > 0:
            offers_by_sku.setdefault(offer.sku, []).append(offer)

    lines: list[tuple[tuple[int, int, str, str, int], PlanLine]] = []
    sinks_all: dict[tuple[str, str], tuple[Sink, bool]] = {}
    for sku in sorted(set(by_sku) | set(offers_by_sku)):
        product = snapshot.products.get(sku) or m.Product(sku=sku)
        sinks: list[tuple[Sink, bool]] = []  # (sink, at risk)
        sources: list[tuple[Source, _SourceRef]] = []
        for level in sorted(by_sku.get(sku, []), key=lambda lv: lv.outlet_id):
            outlet = snapshot.outlets.get(level.outlet_id)
            if outlet is None:
                continue  # not registered yet: no place, no status
            lat, lon = _place(outlet, default)
            need = shortfall(level, horizon_days) if outlet.status in SINK_STATUSES else 0
            if need > 0:
                sink = Sink(
                    level.outlet_id,
                    lat,
                    lon,
                    need,
                    available=level.available + level.incoming,
                    daily_rate=level.daily_rate or 0.0,
                )
                sinks.append((sink, outlet.status == "at_risk"))
                continue
            give = surplus(level) if outlet.status in SOURCE_STATUSES else 0
            if give > 0:
                ref = _SourceRef("outlet", level.outlet_id, None, 1)
                sources.append((Source(f"outlet:{level.outlet_id}", lat, lon, give), ref))
        if not sinks:
            continue
        s_lat, s_lon = _centre([(s.lat, s.lon) for s, _ in sinks])
        for offer in sorted(offers_by_sku.get(sku, []), key=lambda o: o.offer_id):
            ref = _SourceRef("supplier", offer.supplier_id, offer.offer_id, offer.min_order)
            src = Source(f"offer:{offer.offer_id}", s_lat, s_lon, offer.quantity, offer.unit_price)
            sources.append((src, ref))
        refs = {src.id: ref for src, ref in sources}
        left = {src.id: src.quantity for src, _ in sources}
        for sink, at_risk in sinks:
            sinks_all[(sku, sink.id)] = (sink, at_risk)
        # At-risk outlets first; the others share what they leave.
        for tier in (True, False):
            tier_sinks = [s for s, risk in sinks if risk is tier]
            tier_sources = [replace(s, quantity=left[s.id]) for s, _ in sources if left[s.id] > 0]
            if not tier_sinks or not tier_sources:
                continue
            problem = Problem(
                sku,
                tier_sources,
                tier_sinks,
                min_quantity=product.min_transfer_qty,
                case_pack=product.case_pack,
                costs=costs,
            )
            for line in _solve_with_min_orders(problem, refs, solve).lines:
                ref = refs[line.source]
                left[line.source] -= line.quantity
                key = (0 if tier else 1, _pareto_rank(product), sku, line.sink, -line.quantity)
                lines.append(
                    (
                        key,
                        PlanLine(
                            sku=sku,
                            source_kind=ref.kind,
                            source_id=ref.source_id,
                            offer_id=ref.offer_id,
                            outlet_id=line.sink,
                            quantity=line.quantity,
                            cost=int(line.cost),
                            cover_after_days=None,
                        ),
                    )
                )
    lines.sort(key=lambda kl: kl[0])
    kept = [line for _key, line in lines[:max_lines]]
    return _totals(kept, sinks_all)


def _solve_with_min_orders(problem: Problem, refs: Mapping[str, _SourceRef], solve: Solver) -> Plan:
    """The planner knows one minimum per sku; an offer's own minimum order is kept by
    leaving out the offers it would send less than that and solving again."""
    banned: set[str] = set()
    while True:
        sources = [s for s in problem.sources if s.id not in banned]
        plan = solve(replace(problem, sources=sources))
        under = {x.source for x in plan.lines if x.quantity < refs[x.source].min_order}
        if not under:
            return plan
        banned |= under


def _totals(kept: list[PlanLine], sinks: Mapping[tuple[str, str], tuple[Sink, bool]]) -> Proposal:
    received: dict[tuple[str, str], int] = {}
    for line in kept:
        k = (line.sku, line.outlet_id)
        received[k] = received.get(k, 0) + line.quantity

    def cover(line: PlanLine) -> float | None:
        sink = sinks[(line.sku, line.outlet_id)][0]
        if sink.daily_rate <= 0:
            return None
        days = (sink.available + received[(line.sku, line.outlet_id)]) / sink.daily_rate
        return round(days, 2) if math.isfinite(days) else None

    out = tuple(replace(line, cover_after_days=cover(line)) for line in kept)
    short = sum(max(0, s.quantity - received.get(k, 0)) for k, (s, _r) in sinks.items())
    avoided = sum(1 for k, (s, _r) in sinks.items() if s.available <= 0 and received.get(k, 0) > 0)
    return Proposal(
        lines=out,
        units=sum(line.quantity for line in out),
        cost=sum(line.cost for line in out),
        stockouts_avoided=avoided,
        short=short,
    )
