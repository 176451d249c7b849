"""Matching rules of the transfer service (pure domain code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jejaring_transfer.domain.matching import (
    Need,
    Network,
    Offer,
    Outlet,
    Product,
    Stock,
    allocate,
    donor_surplus,
    haversine_km,
    match,
    round_request,
)

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def net(
    stock: list[tuple[str, int, int]],
    offers: list[Offer] | None = None,
    outlets: list[Outlet] | None = None,
    product: Product | None = None,
) -> Network:
    outs = {o.outlet_id: o for o in outlets or []}
    for oid, _a, _r in [*stock, ("dest", 0, 0)]:
        outs.setdefault(oid, Outlet(oid, community="c1", region="r1", lat=-6.2, lon=106.8))
    p = product or Product("A")
    return Network(
        outlets=outs,
        stock={(o, p.sku): Stock(o, p.sku, a, r) for o, a, r in stock},
        offers=offers or [],
        products={p.sku: p},
    )


def need(q: int, needed_by: datetime | None = None, rid: str = "r1", outlet: str = "dest") -> Need:
    return Need(rid, outlet, "A", q, needed_by=needed_by, created_at=NOW)


def test_haversine_jakarta_bandung_is_about_120_km() -> None:
    km = haversine_km(
        Outlet("j", lat=-6.2088, lon=106.8456), Outlet("b", lat=-6.9175, lon=107.6191)
    )
    assert km is not None
    assert 110 < km < 125


def test_one_peer_with_surplus_fills_everything_and_is_explained() -> None:
    m = match(need(10), net([("p1", 30, 5), ("p2", 8, 2)]), NOW)
    assert m.strategy == "single_source"
    assert [(a.source_id, a.quantity) for a in m.allocations] == [("p1", 10)]
    explained = m.explanation()
    by_source = {c["source_id"]: c for c in explained["candidates"]}
    assert by_source["p1"]["chosen"] is True
    assert set(by_source["p1"]["terms"]) == {"transport", "price", "lead_time", "risk", "total"}
    assert by_source["p2"]["chosen"] is False


def test_a_donor_is_never_taken_below_its_reorder_point() -> None:
    m = match(need(10), net([("p1", 12, 5)]), NOW)
    assert [(a.source_id, a.quantity) for a in m.allocations] == [("p1", 7)]
    assert m.unfilled == 3
    m2 = match(need(10), net([("p1", 5, 5)]), NOW)
    assert m2.allocations == []
    assert m2.candidates[0].excluded == "at_or_below_reorder_point"


def test_split_when_no_single_source_fills_it() -> None:
    m = match(need(10), net([("p1", 11, 5), ("p2", 9, 3)]), NOW)
    assert m.strategy == "split"
    assert sorted((a.source_id, a.quantity) for a in m.allocations) == [("p1", 6), ("p2", 4)]
    assert m.unfilled == 0


def test_single_source_preferred_over_a_cheaper_split() -> None:
    near = Outlet("near", community="c1", region="r1", lat=-6.2, lon=106.8)
    far = Outlet("far", community="c9", region="r9", lat=-7.0, lon=110.0)
    m = match(need(10), net([("near", 8, 2), ("far", 50, 2)], outlets=[near, far]), NOW)
    assert [(a.source_id, a.quantity) for a in m.allocations] == [("far", 10)]


def test_nearer_and_same_community_is_cheaper() -> None:
    near = Outlet("near", community="c1", region="r1", lat=-6.21, lon=106.81)
    far = Outlet("far", community="c2", region="r2", lat=-6.9, lon=107.6)
    m = match(need(5), net([("near", 50, 2), ("far", 50, 2)], outlets=[near, far]), NOW)
    assert m.allocations[0].source_id == "near"


def test_case_packs_and_minimum_transfer_quantity() -> None:
    product = Product("A", case_pack=6, min_transfer_qty=12)
    assert round_request(5, product) == 12
    assert round_request(13, product) == 18
    m = match(need(18), net([("p1", 20, 3), ("p2", 100, 0)], product=product), NOW)
    assert [(a.source_id, a.quantity) for a in m.allocations] == [("p2", 18)]
    m2 = match(need(18), net([("p1", 20, 3), ("p2", 10, 0)], product=product), NOW)
    # p1 can give 17 -> 12 (two cases); p2 can give 10 -> 6, below the minimum of 12
    assert [(a.source_id, a.quantity) for a in m2.allocations] == [("p1", 12)]
    assert m2.unfilled == 6


def test_supplier_when_no_peer_has_surplus_and_lead_time_penalty() -> None:
    slow = Offer("o-slow", "s-slow", "A", 100, unit_price=600, lead_time_hours=24)
    fast = Offer("o-fast", "s-fast", "A", 100, unit_price=1100, lead_time_hours=4)
    network = net([("p1", 3, 3)], offers=[slow, fast])
    relaxed = match(need(10), network, NOW)
    assert relaxed.allocations[0].source_id == "s-slow"
    urgent = match(need(10, needed_by=NOW + timedelta(hours=8)), network, NOW)
    assert urgent.allocations[0].source_id == "s-fast"
    terms = {c.source_id: c.terms for c in urgent.candidates if c.terms}
    assert terms["s-slow"].lead_time > terms["s-fast"].lead_time


def test_unreliable_supplier_costs_more_and_excluded_sources_are_skipped() -> None:
    good = Offer("o1", "good", "A", 100, unit_price=1000, lead_time_hours=10, reliability=0.95)
    bad = Offer("o2", "bad", "A", 100, unit_price=1000, lead_time_hours=10, reliability=0.2)
    network = net([], offers=[bad, good])
    assert match(need(10), network, NOW).allocations[0].source_id == "good"
    m = match(need(10), network, NOW, exclude=frozenset({"supplier:good"}))
    assert m.allocations[0].source_id == "bad"
    assert {c.source_id: c.excluded for c in m.candidates}["good"] == "failed_before"


def test_min_order_of_an_offer() -> None:
    offer = Offer("o1", "s1", "A", 100, unit_price=1000, lead_time_hours=10, min_order=20)
    assert match(need(10), net([], offers=[offer]), NOW).allocations == []


def test_scarce_stock_goes_to_at_risk_outlets_and_pareto_a_first() -> None:
    product = Product("A", pareto_class="A")
    risky = Outlet("risky", community="c1", region="r1", status="at_risk")
    calm = Outlet("calm", community="c1", region="r1")
    network = net([("p1", 12, 2)], outlets=[risky, calm], product=product)
    first = Need("r-calm", "calm", "A", 10, created_at=NOW - timedelta(hours=1))
    second = Need("r-risky", "risky", "A", 10, created_at=NOW)
    matches = {m.need.request_id: m for m in allocate([first, second], network, NOW)}
    assert matches["r-risky"].allocated == 10
    assert matches["r-calm"].allocated == 0
    # the network passed in is untouched
    assert network.stock[("p1", "A")].available == 12


def test_pareto_a_before_c_when_scarce() -> None:
    a = Product("A", pareto_class="A")
    c = Product("C", pareto_class="C")
    network = Network(
        outlets={o: Outlet(o) for o in ("p1", "d1", "d2")},
        stock={("p1", "A"): Stock("p1", "A", 10, 0), ("p1", "C"): Stock("p1", "C", 10, 0)},
        offers=[],
        products={"A": a, "C": c},
    )
    needs = [Need("rc", "d1", "C", 5, created_at=NOW), Need("ra", "d2", "A", 5, created_at=NOW)]
    order = [m.need.request_id for m in allocate(needs, network, NOW)]
    assert order == ["ra", "rc"]


# -- property: random networks ----------------------------------------------------------------


@st.composite
def networks(draw: st.DrawFn) -> tuple[Network, list[Need]]:
    case_pack = draw(st.integers(1, 6))
    min_transfer = draw(st.integers(1, 12))
    product = Product(
        "A",
        case_pack=case_pack,
        min_transfer_qty=min_transfer,
        pareto_class=draw(st.sampled_from("ABC")),
    )
    n_outlets = draw(st.integers(1, 8))
    outlets = {
        f"o{i}": Outlet(
            f"o{i}",
            community=draw(st.sampled_from(["c1", "c2", None])),
            region=draw(st.sampled_from(["r1", "r2", None])),
            lat=draw(st.none() | st.floats(-8, -5)),
            lon=draw(st.none() | st.floats(105, 112)),
            status=draw(st.sampled_from(["active", "active", "at_risk", "closed"])),
        )
        for i in range(n_outlets)
    }
    stock = {
        (o, "A"): Stock(o, "A", draw(st.integers(-5, 200)), draw(st.integers(0, 50)))
        for o in outlets
        if draw(st.booleans())
    }
    offers = [
        Offer(
            f"of{i}",
            f"s{i}",
            "A",
            draw(st.integers(1, 100)),
            unit_price=draw(st.integers(0, 5000)),
            lead_time_hours=draw(st.integers(0, 96)),
            min_order=draw(st.integers(1, 20)),
            reliability=draw(st.floats(0, 1)),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    needs = [
        Need(
            f"r{i}",
            draw(st.sampled_from(sorted(outlets))),
            "A",
            round_request(draw(st.integers(1, 150)), product),
            needed_by=draw(st.none() | st.just(NOW + timedelta(hours=draw(st.integers(1, 100))))),
            created_at=NOW,
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    return Network(outlets, stock, offers, {"A": product}), needs


@settings(max_examples=300, deadline=None)
@given(networks())
def test_random_networks_keep_every_rule(case: tuple[Network, list[Need]]) -> None:
    network, needs = case
    product = network.products["A"]
    matches = allocate(needs, network, NOW)
    taken: dict[str, int] = {}
    offered: dict[str, int] = {}
    for m in matches:
        assert m.allocated + m.unfilled == m.need.quantity
        assert m.allocated <= m.need.quantity  # never more than requested
        for a in m.allocations:
            assert a.quantity > 0
            assert a.quantity % product.case_pack == 0
            assert a.quantity >= product.min_transfer_qty
            assert a.source_id != m.need.outlet_id
            if a.kind == "outlet":
                assert network.outlets[a.source_id].status != "closed"
                taken[a.source_id] = taken.get(a.source_id, 0) + a.quantity
            else:
                offer = next(o for o in network.offers if o.offer_id == a.offer_id)
                assert a.quantity >= offer.min_order
                offered[offer.offer_id] = offered.get(offer.offer_id, 0) + a.quantity
        assert {(c.kind, c.source_id, c.offer_id) for c in m.candidates if c.chosen} == {
            (a.kind, a.source_id, a.offer_id) for a in m.allocations
        }
    for outlet_id, units in taken.items():
        s = network.stock[(outlet_id, "A")]
        # a donor is never taken below its own reorder point, over all needs together
        assert s.available - units >= s.reorder_point
        assert units <= donor_surplus(s)
    for offer_id, units in offered.items():
        assert units <= next(o.quantity for o in network.offers if o.offer_id == offer_id)


@settings(max_examples=200, deadline=None)
@given(networks())
def test_a_single_source_is_chosen_whenever_one_can_fill_it(
    case: tuple[Network, list[Need]],
) -> None:
    network, needs = case
    m = match(needs[0], network, NOW)
    full = [c for c in m.candidates if c.excluded is None and c.can_give >= needs[0].quantity]
    if full:
        assert m.strategy == "single_source"
        assert len(m.allocations) == 1
