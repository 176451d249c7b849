"""Rebalancing plans from projections (domain/plans.py): who is short, who may give, the
per-sku problems and the plan's totals."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from jejaring_transfer.domain import matching as m
from jejaring_transfer.domain.plans import (
    Level,
    PlanLine,
    Snapshot,
    lapsed,
    par,
    propose,
    shortfall,
    surplus,
)
from jejaring_transfer.domain.rebalancing import Plan, Problem, plan_sku

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def outlet(oid: str, lat: float = -6.2, lon: float = 106.8, status: str = "active") -> m.Outlet:
    return m.Outlet(oid, "c1", "r1", lat, lon, status)


def snap(
    outlets: list[m.Outlet],
    levels: list[Level],
    offers: list[m.Offer] | None = None,
    products: list[m.Product] | None = None,
) -> Snapshot:
    return Snapshot(
        {o.outlet_id: o for o in outlets},
        levels,
        offers or [],
        {p.sku: p for p in products or []},
        NOW,
    )


# -- who is short, who may give ----------------------------------------------------------------


def test_below_reorder_point_asks_up_to_the_maximum_or_twice_the_reorder_point() -> None:
    assert shortfall(Level("o", "A", 3, 10, maximum=40), 7) == 37
    assert shortfall(Level("o", "A", 3, 10), 7) == 17  # par 2 x 10 without a maximum
    assert shortfall(Level("o", "A", 10, 10, maximum=40), 7) == 30  # at the point is short
    assert shortfall(Level("o", "A", -4, 10, maximum=40), 7) == 44  # oversold
    assert par(Level("o", "A", 0, 10, maximum=5)) == 11  # a maximum under the point


def test_the_horizon_counts_only_with_a_known_daily_rate() -> None:
    level = Level("o", "A", 30, 10, maximum=50)
    assert shortfall(level, 7) == 0  # no rate: not short now, so not short
    fast = Level("o", "A", 30, 10, maximum=50, daily_rate=3.0)
    assert shortfall(fast, 7) == 20  # 30 - 21 = 9 <= 10 within the week
    assert shortfall(fast, 6) == 0  # 30 - 18 = 12 > 10


def test_what_open_requests_will_bring_counts() -> None:
    assert shortfall(Level("o", "A", 3, 10, maximum=40, incoming=30), 7) == 0
    assert shortfall(Level("o", "A", 3, 10, maximum=40, incoming=5), 7) == 32


def test_a_level_not_stocked_is_never_short() -> None:
    assert shortfall(Level("o", "A", 0, 0), 7) == 0


def test_donors_give_above_their_maximum_and_never_below_their_reorder_point() -> None:
    assert surplus(Level("o", "A", 90, 10, maximum=40)) == 50
    assert surplus(Level("o", "A", 90, 60, maximum=40)) == 30
    assert surplus(Level("o", "A", 90, 10)) == 0  # maximum unknown: never in surplus
    assert surplus(Level("o", "A", 30, 10, maximum=40)) == 0


# -- plans -------------------------------------------------------------------------------------


def test_surplus_moves_to_the_short_outlet_with_cost_and_cover() -> None:
    s = snap(
        [outlet("rich", -6.21, 106.81), outlet("poor")],
        [
            Level("rich", "A", 100, 10, maximum=40),
            Level("poor", "A", 2, 10, maximum=30, daily_rate=4.0),
        ],
        products=[m.Product("A", case_pack=4, min_transfer_qty=4)],
    )
    plan = propose(s, horizon_days=7, max_lines=10)
    assert len(plan.lines) == 1
    line = plan.lines[0]
    assert (line.source_kind, line.source_id, line.outlet_id) == ("outlet", "rich", "poor")
    assert line.quantity == 28  # need 28, seven cases of four
    assert line.cost > 0
    assert line.cover_after_days == pytest.approx((2 + 28) / 4.0)
    assert (plan.units, plan.cost, plan.short, plan.stockouts_avoided) == (28, line.cost, 0, 0)


def test_closed_and_unknown_outlets_neither_give_nor_receive() -> None:
    s = snap(
        [outlet("rich", status="closed"), outlet("poor", status="closed"), outlet("ok")],
        [
            Level("rich", "A", 100, 10, maximum=40),
            Level("poor", "A", 0, 10, maximum=30),
            Level("ghost", "A", 0, 10, maximum=30),  # not in outlets_view
            Level("ok", "A", 0, 10, maximum=30),
        ],
    )
    plan = propose(s, horizon_days=7, max_lines=10)
    assert plan.lines == ()
    assert plan.short == 30  # only "ok" counts, and nothing can feed it


def test_supplier_offers_feed_what_outlets_cannot_and_respect_min_order() -> None:
    offers = [
        m.Offer("of1", "sup1", "A", 100, 1_500, 24, min_order=1),
        m.Offer("of2", "sup2", "A", 100, 10, 24, valid_until=NOW - timedelta(hours=1)),
        m.Offer("of3", "sup3", "A", 100, 20, 24, min_order=500),
    ]
    s = snap(
        [outlet("poor"), outlet("poor2", -6.5, 106.9)],
        [Level("poor", "A", 0, 10, maximum=30), Level("poor2", "A", 5, 10, maximum=20)],
        offers,
    )
    plan = propose(s, horizon_days=7, max_lines=10)
    assert {(x.source_kind, x.source_id, x.offer_id) for x in plan.lines} == {
        ("supplier", "sup1", "of1")
    }
    assert plan.units == 30 + 15
    assert plan.stockouts_avoided == 1  # "poor" was at zero


def test_at_risk_outlets_get_scarce_surplus_first() -> None:
    s = snap(
        [outlet("donor"), outlet("near", -6.201, 106.801), outlet("far", -6.6, 107.2, "at_risk")],
        [
            Level("donor", "A", 60, 10, maximum=40),  # 20 to give
            Level("near", "A", 0, 10, maximum=20),
            Level("far", "A", 0, 10, maximum=20),
        ],
    )
    plan = propose(s, horizon_days=7, max_lines=10)
    assert [(x.outlet_id, x.quantity) for x in plan.lines] == [("far", 20)]
    assert plan.short == 20


def test_max_lines_keeps_at_risk_and_pareto_a_first() -> None:
    outlets = [outlet("donor"), outlet("x", -6.3, 106.9), outlet("y", -6.25, 106.7, "at_risk")]
    levels = [Level("donor", sku, 200, 10, maximum=40) for sku in ("A1", "C1")] + [
        Level("x", "A1", 0, 10, maximum=20),
        Level("x", "C1", 0, 10, maximum=20),
        Level("y", "C1", 0, 10, maximum=20),
    ]
    products = [m.Product("A1", pareto_class="A"), m.Product("C1", pareto_class="C")]
    full = propose(snap(outlets, levels, products=products), horizon_days=7, max_lines=10)
    assert len(full.lines) == 3 and full.short == 0
    cut = propose(snap(outlets, levels, products=products), horizon_days=7, max_lines=2)
    assert [(x.sku, x.outlet_id) for x in cut.lines] == [("C1", "y"), ("A1", "x")]
    assert cut.short == 20  # what the dropped line would have brought


def test_the_solver_sees_one_problem_per_sku_and_tier() -> None:
    seen: list[Problem] = []

    def spy(problem: Problem) -> Plan:
        seen.append(problem)
        return plan_sku(problem)

    s = snap(
        [outlet("d"), outlet("a", status="at_risk"), outlet("b")],
        [
            Level("d", "A", 100, 10, maximum=40),
            Level("a", "A", 0, 10, maximum=20),
            Level("b", "A", 0, 10, maximum=20),
            Level("d", "B", 5, 10, maximum=20),  # nothing to give: no problem for B
        ],
        products=[m.Product("A", case_pack=5, min_transfer_qty=10)],
    )
    propose(s, horizon_days=7, max_lines=10, solve=spy)
    assert [([t.id for t in p.sinks], p.case_pack, p.min_quantity) for p in seen] == [
        (["a"], 5, 10),
        (["b"], 5, 10),
    ]
    assert seen[1].sources[0].quantity == 40  # 60 surplus less the 20 the first tier took


@pytest.mark.parametrize("seed", range(12))
def test_random_networks_keep_every_rule(seed: int) -> None:
    rng = random.Random(seed)
    skus = ["A", "B", "C"]
    outlets = [
        outlet(
            f"o{i}",
            -6.4 + rng.uniform(-0.3, 0.3),
            106.8 + rng.uniform(-0.3, 0.3),
            rng.choice(["active", "active", "at_risk", "closed"]),
        )
        for i in range(15)
    ]
    levels = [
        Level(
            o.outlet_id,
            sku,
            rng.randint(-3, 120),
            rng.randint(0, 20),
            rng.choice([None, rng.randint(10, 60)]),
            rng.choice([None, rng.uniform(0.5, 6)]),
            rng.choice([0, 0, rng.randint(1, 20)]),
        )
        for o in outlets
        for sku in skus
    ]
    offers = [
        m.Offer(
            f"of{k}",
            f"s{k}",
            rng.choice(skus),
            rng.randint(0, 80),
            rng.randint(500, 30_000),
            24,
            min_order=rng.randint(1, 20),
        )
        for k in range(4)
    ]
    products = [
        m.Product(sku, case_pack=rng.randint(1, 4), min_transfer_qty=rng.randint(1, 8))
        for sku in skus
    ]
    s = snap(outlets, levels, offers, products)
    horizon = rng.randint(1, 14)
    plan = propose(s, horizon_days=horizon, max_lines=rng.randint(1, 40))
    status = {o.outlet_id: o.status for o in outlets}
    by_level = {(lv.outlet_id, lv.sku): lv for lv in levels}
    product = {p.sku: p for p in products}
    sent: dict[tuple[str, str], int] = {}
    got: dict[tuple[str, str], int] = {}
    for line in plan.lines:
        p = product[line.sku]
        assert line.quantity % p.case_pack == 0 and line.quantity >= p.min_transfer_qty
        assert status[line.outlet_id] in ("active", "at_risk")
        key = (line.offer_id or line.source_id, line.sku)
        sent[key] = sent.get(key, 0) + line.quantity
        got[(line.outlet_id, line.sku)] = got.get((line.outlet_id, line.sku), 0) + line.quantity
        if line.source_kind == "outlet":
            assert status[line.source_id] != "closed"
        else:
            offer = next(o for o in offers if o.offer_id == line.offer_id)
            assert line.quantity >= offer.min_order
    for (source, sku), q in sent.items():
        if (source, sku) in by_level:
            lv = by_level[(source, sku)]
            assert lv.maximum is not None
            assert lv.available - q >= max(lv.maximum, lv.reorder_point)  # never below
        else:
            assert q <= next(o.quantity for o in offers if o.offer_id == source)
    for k, q in got.items():
        assert q <= shortfall(by_level[k], horizon)  # never past the maximum / par
    assert len(plan.lines) <= 40
    assert plan.units == sum(x.quantity for x in plan.lines)


def test_lines_that_no_longer_hold_at_approval_are_found_with_why() -> None:
    """`lapsed`: what approval refuses once the projections moved on since the proposal."""
    now = datetime(2026, 12, 7, tzinfo=UTC)
    sku, other = "rice", "oil"
    outlets = {
        "rich": m.Outlet("rich"),
        "poor": m.Outlet("poor"),
        "gone": m.Outlet("gone", status="closed"),
    }
    levels = [
        Level("rich", sku, available=60, reorder_point=10, maximum=20),
        # poor: 5 on hand, 10 coming from a request opened since, par 30.
        Level("poor", sku, available=5, reorder_point=10, maximum=30, incoming=10),
        Level("poor", other, available=0, reorder_point=5, maximum=30),
        Level("rich", other, available=40, reorder_point=5, maximum=10),
    ]
    offers = [
        m.Offer("of-1", "sup", sku, quantity=12, unit_price=1, lead_time_hours=1),
        m.Offer("of-old", "sup", sku, 50, 1, 1, valid_until=now - timedelta(seconds=1)),
    ]
    products = {sku: m.Product(sku, case_pack=5), other: m.Product(other, min_transfer_qty=4)}
    snap = Snapshot(outlets, levels, offers, products, now)

    def line(sink: str, quantity: int, source: str = "rich", offer: str | None = None) -> PlanLine:
        kind: Literal["outlet", "supplier"] = "supplier" if offer else "outlet"
        return PlanLine(sku, kind, source, offer, sink, quantity, 0, None)

    assert lapsed([("a", line("poor", 10))], snap, set()) == []
    # 5 + 10 coming + 10 + 10 reaches par 30 only after the second line: the third lapses.
    assert lapsed(
        [("a", line("poor", 10)), ("b", line("poor", 5)), ("c", line("poor", 5))], snap, set()
    ) == [("c", "already_covered")]
    assert lapsed([("a", line("gone", 10))], snap, set()) == [("a", "outlet_closed")]
    assert lapsed([("a", line("poor", 10))], snap, {sku}) == [("a", "product_retired")]
    assert lapsed([("a", line("poor", 7))], snap, set()) == [("a", "product_changed")]
    odd = PlanLine(other, "outlet", "rich", None, "poor", 3, 0, None)
    assert lapsed([("a", odd)], snap, set()) == [("a", "product_changed")]
    # rich can give 50 above its reorder point; a source that holds none of it cannot.
    assert lapsed(
        [("a", line("poor", 10, "rich")), ("b", line("poor", 5, "nobody"))], snap, set()
    ) == [("b", "source_unavailable")]
    # The offer has 12 left: the first 10 fit, 5 more do not; a lapsed offer gives nothing.
    snap2 = Snapshot(outlets, [replace(levels[1], incoming=0)], offers, products, now)
    assert lapsed(
        [
            ("a", line("poor", 10, "sup", "of-1")),
            ("b", line("poor", 5, "sup", "of-1")),
            ("c", line("poor", 5, "sup", "of-old")),
        ],
        snap2,
        set(),
    ) == [("b", "source_unavailable"), ("c", "source_unavailable")]
