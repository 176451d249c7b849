"""Matching a restock need to the best sources: pure code, no I/O.

Candidates come from transfer's projections (outlets, stock availability, supplier offers,
product attributes). Every candidate gets a cost per unit made of four terms, all in
rupiah:

- transport: a fixed cost per leg plus a cost per km of haversine distance between the two
  outlets' coordinates, shared over the units moved; cheaper within the same community or
  region. Suppliers deliver for a flat cost (cheaper in the outlet's community).
- price: the supplier's unit price (peer outlets move stock at no price).
- lead time: an hourly cost of waiting, plus a heavy penalty per hour the source would
  arrive after the needed-by time.
- risk: a supplier's unreliability (1 - reliability score) and a donor running low (the
  closer a donor is left to its reorder point, the higher), and a donor marked at risk.

Rules: a donor is never taken below its own reorder point; every leg is a whole number of
case packs and at least the product's minimum transfer quantity (and the offer's minimum
order); never more than the need is allocated. One source that can fill everything is
preferred (the cheapest such); otherwise the need is split over the cheapest sources per
unit. When several needs compete for scarce stock (`allocate`), at-risk outlets and pareto
class A items go first. Every match carries its explanation: each candidate considered,
its terms, and why it was or was not taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

SourceKind = Literal["outlet", "supplier"]
PARETO_RANK = {"A": 0, "B": 1, "C": 2}


@dataclass(frozen=True)
class Outlet:
    outlet_id: str
    community: str | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None
    status: str = "active"


@dataclass(frozen=True)
class Stock:
    """An outlet's availability of a sku, as the projection knows it."""

    outlet_id: str
    sku: str
    available: int
    reorder_point: int


@dataclass(frozen=True)
class Offer:
    offer_id: str
    supplier_id: str
    sku: str
    quantity: int
    """What is left of the offer (minus what active legs already hold)."""
    unit_price: int
    lead_time_hours: float
    min_order: int = 1
    reliability: float = 0.8
    community: str | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class Product:
    sku: str
    case_pack: int = 1
    min_transfer_qty: int = 1
    pareto_class: str = "C"
    perishable: bool = False


@dataclass(frozen=True)
class Need:
    request_id: str
    outlet_id: str
    sku: str
    quantity: int
    needed_by: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Policy:
    """Cost weights, in rupiah; the defaults are plausible for a small-town network."""

    leg_fixed_cost: int = 15_000
    cost_per_km: int = 3_000
    same_community_factor: float = 0.5
    same_region_factor: float = 0.75
    unknown_distance_km: float = 25.0
    supplier_delivery_cost: int = 20_000
    peer_handling_hours: float = 2.0
    peer_speed_kmh: float = 30.0
    hour_cost_per_unit: float = 10.0
    late_cost_per_unit_hour: float = 500.0
    unreliability_cost_per_unit: int = 2_000
    donor_low_cost_per_unit: int = 500
    donor_at_risk_cost_per_unit: int = 5_000
    perishable_hour_cost_factor: float = 3.0


@dataclass(frozen=True)
class Terms:
    transport: float
    price: float
    lead_time: float
    risk: float

    @property
    def total(self) -> float:
        return self.transport + self.price + self.lead_time + self.risk

    def as_dict(self) -> dict[str, float]:
        return {
            "transport": round(self.transport, 2),
            "price": round(self.price, 2),
            "lead_time": round(self.lead_time, 2),
            "risk": round(self.risk, 2),
            "total": round(self.total, 2),
        }


@dataclass
class Candidate:
    kind: SourceKind
    source_id: str
    offer_id: str | None
    can_give: int
    """Units this source can give for this need (rules applied), 0 if none."""
    quantity: int = 0
    """Units this source would give if chosen (set when costed)."""
    terms: Terms | None = None
    distance_km: float | None = None
    lead_time_hours: float = 0.0
    unit_price: int = 0
    excluded: str | None = None
    chosen: bool = False

    @property
    def per_unit(self) -> float:
        if self.terms is None or self.quantity <= 0:
            return math.inf
        return self.terms.total / self.quantity

    def explain(self) -> dict[str, Any]:
        return {
            "source_kind": self.kind,
            "source_id": self.source_id,
            "offer_id": self.offer_id,
            "can_give": self.can_give,
            "quantity": self.quantity,
            "distance_km": None if self.distance_km is None else round(self.distance_km, 2),
            "lead_time_hours": round(self.lead_time_hours, 2),
            "unit_price": self.unit_price,
            "terms": self.terms.as_dict() if self.terms else None,
            "cost_per_unit": None if math.isinf(self.per_unit) else round(self.per_unit, 2),
            "excluded": self.excluded,
            "chosen": self.chosen,
        }


@dataclass(frozen=True)
class Allocation:
    kind: SourceKind
    source_id: str
    offer_id: str | None
    quantity: int
    unit_price: int
    lead_time_hours: float
    terms: Terms


@dataclass
class Match:
    need: Need
    allocations: list[Allocation]
    unfilled: int
    strategy: str
    """single_source, split, or none."""
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def allocated(self) -> int:
        return sum(a.quantity for a in self.allocations)

    def explanation(self) -> dict[str, Any]:
        return {
            "need": self.need.quantity,
            "strategy": self.strategy,
            "allocated": self.allocated,
            "unfilled": self.unfilled,
            "candidates": [c.explain() for c in self.candidates],
        }


# -- quantities ----------------------------------------------------------------------------


def round_request(quantity: int, product: Product) -> int:
    """A requested quantity as a whole number of case packs, at least the minimum transfer
    quantity: what the outlet will actually be sent if it is filled."""
    q = max(quantity, product.min_transfer_qty)
    return math.ceil(q / product.case_pack) * product.case_pack


def leg_quantity(give: int, need: int, product: Product, min_order: int = 1) -> int:
    """The most a source can send of `need`: a whole number of case packs, no more than it
    can give nor than needed, at least the minimum transfer (and order) quantity; else 0."""
    q = (min(give, need) // product.case_pack) * product.case_pack
    return q if q >= max(product.min_transfer_qty, min_order) and q > 0 else 0


def donor_surplus(stock: Stock) -> int:
    """What a donor can give without going below its own reorder point."""
    return max(0, stock.available - stock.reorder_point)


# -- cost ----------------------------------------------------------------------------------


def haversine_km(a: Outlet, b: Outlet) -> float | None:
    if a.lat is None or a.lon is None or b.lat is None or b.lon is None:
        return None
    lat1, lon1, lat2, lon2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


def _closeness(a: Outlet, b_community: str | None, b_region: str | None, policy: Policy) -> float:
    if a.community and a.community == b_community:
        return policy.same_community_factor
    if a.region and a.region == b_region:
        return policy.same_region_factor
    return 1.0


def _lead_time_cost(
    hours: float, quantity: int, now: datetime, need: Need, product: Product, policy: Policy
) -> float:
    per_hour = policy.hour_cost_per_unit * (
        policy.perishable_hour_cost_factor if product.perishable else 1.0
    )
    cost = hours * per_hour * quantity
    if need.needed_by is not None:
        late_h = (now + timedelta(hours=hours) - need.needed_by).total_seconds() / 3600
        if late_h > 0:
            cost += late_h * policy.late_cost_per_unit_hour * quantity
    return cost


def peer_terms(
    donor: Outlet,
    stock: Stock,
    dest: Outlet,
    quantity: int,
    need: Need,
    product: Product,
    now: datetime,
    policy: Policy,
) -> tuple[Terms, float | None, float]:
    km = haversine_km(donor, dest)
    dist = policy.unknown_distance_km if km is None else km
    factor = _closeness(dest, donor.community, donor.region, policy)
    transport = (policy.leg_fixed_cost + policy.cost_per_km * dist) * factor
    hours = policy.peer_handling_hours + dist / policy.peer_speed_kmh
    left = stock.available - quantity
    # 0 when the donor keeps twice its reorder point or more, up to 1 at the reorder point.
    low = 0.0 if stock.reorder_point <= 0 else min(1.0, stock.reorder_point / max(left, 1))
    risk = policy.donor_low_cost_per_unit * low * quantity
    if donor.status == "at_risk":
        risk += policy.donor_at_risk_cost_per_unit * quantity
    terms = Terms(
        transport=transport,
        price=0.0,
        lead_time=_lead_time_cost(hours, quantity, now, need, product, policy),
        risk=risk,
    )
    return terms, km, hours


def supplier_terms(
    offer: Offer,
    dest: Outlet,
    quantity: int,
    need: Need,
    product: Product,
    now: datetime,
    policy: Policy,
) -> Terms:
    same = dest.community is not None and dest.community == offer.community
    factor = policy.same_community_factor if same else 1.0
    return Terms(
        transport=policy.supplier_delivery_cost * factor,
        price=float(offer.unit_price * quantity),
        lead_time=_lead_time_cost(offer.lead_time_hours, quantity, now, need, product, policy),
        risk=policy.unreliability_cost_per_unit * (1.0 - offer.reliability) * quantity,
    )


# -- matching ------------------------------------------------------------------------------


@dataclass
class Network:
    """What the projections know, for the matcher."""

    outlets: dict[str, Outlet]
    stock: dict[tuple[str, str], Stock]
    """(outlet_id, sku) -> availability"""
    offers: list[Offer]
    products: dict[str, Product]

    def product(self, sku: str) -> Product:
        return self.products.get(sku) or Product(sku=sku)

    def stock_of(self, sku: str) -> Iterable[Stock]:
        return (s for (_o, s_sku), s in self.stock.items() if s_sku == sku)


def source_key(kind: str, source_id: str) -> str:
    """How a failed source is kept in a request's exclusions ("outlet:<id>", "supplier:<id>")."""
    return f"{kind}:{source_id}"


def candidates_for(
    need: Need,
    network: Network,
    now: datetime,
    policy: Policy,
    exclude: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """Every source considered for the need, costed for the quantity it could give."""
    product = network.product(need.sku)
    dest = network.outlets.get(need.outlet_id) or Outlet(need.outlet_id)
    out: list[Candidate] = []
    for stock in sorted(network.stock_of(need.sku), key=lambda s: s.outlet_id):
        if stock.outlet_id == need.outlet_id:
            continue
        donor = network.outlets.get(stock.outlet_id)
        cand = Candidate("outlet", stock.outlet_id, None, 0)
        surplus = donor_surplus(stock)
        if source_key("outlet", stock.outlet_id) in exclude:
            cand.excluded = "failed_before"
        elif donor is None:
            cand.excluded = "unknown_outlet"
        elif donor.status == "closed":
            cand.excluded = "outlet_closed"
        elif surplus <= 0:
            cand.excluded = "at_or_below_reorder_point"
        else:
            cand.can_give = leg_quantity(surplus, need.quantity, product)
            if cand.can_give == 0:
                cand.excluded = "less_than_case_pack_or_min_transfer"
        if cand.excluded is None and donor is not None:
            cand.quantity = cand.can_give
            cand.terms, cand.distance_km, cand.lead_time_hours = peer_terms(
                donor, stock, dest, cand.quantity, need, product, now, policy
            )
        out.append(cand)
    for offer in sorted(network.offers, key=lambda o: (o.supplier_id, o.offer_id)):
        if offer.sku != need.sku:
            continue
        cand = Candidate(
            "supplier",
            offer.supplier_id,
            offer.offer_id,
            0,
            lead_time_hours=offer.lead_time_hours,
            unit_price=offer.unit_price,
        )
        if source_key("supplier", offer.supplier_id) in exclude:
            cand.excluded = "failed_before"
        elif offer.valid_until is not None and offer.valid_until <= now:
            cand.excluded = "offer_expired"
        else:
            cand.can_give = leg_quantity(offer.quantity, need.quantity, product, offer.min_order)
            if cand.can_give == 0:
                cand.excluded = "less_than_min_order_or_case_pack"
        if cand.excluded is None:
            cand.quantity = cand.can_give
            cand.terms = supplier_terms(offer, dest, cand.quantity, need, product, now, policy)
        out.append(cand)
    return out


def _recost(
    cand: Candidate, quantity: int, need: Need, network: Network, now: datetime, policy: Policy
) -> Candidate:
    """The same candidate costed for a smaller quantity (the last part of a split)."""
    product = network.product(need.sku)
    dest = network.outlets.get(need.outlet_id) or Outlet(need.outlet_id)
    c = replace(cand, quantity=quantity)
    if cand.kind == "outlet":
        c.terms, _, _ = peer_terms(
            network.outlets[cand.source_id],
            network.stock[(cand.source_id, need.sku)],
            dest,
            quantity,
            need,
            product,
            now,
            policy,
        )
    else:
        offer = next(o for o in network.offers if o.offer_id == cand.offer_id)
        c.terms = supplier_terms(offer, dest, quantity, need, product, now, policy)
    return c


def match(
    need: Need,
    network: Network,
    now: datetime,
    policy: Policy | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Match:
    """The best sources for one need (see the module docstring)."""
    policy = policy or Policy()
    cands = candidates_for(need, network, now, policy, exclude)
    usable = [c for c in cands if c.excluded is None and c.quantity > 0]
    product = network.product(need.sku)
    full = [c for c in usable if c.quantity >= need.quantity]
    if full:
        best = min(full, key=lambda c: (c.terms.total if c.terms else math.inf, c.source_id))
        best.chosen = True
        return Match(need, [_allocation(best)], 0, "single_source", cands)
    remaining = need.quantity
    chosen: list[Candidate] = []
    for c in sorted(usable, key=lambda c: (c.per_unit, c.source_id)):
        if remaining <= 0:
            break
        min_order = 1
        if c.kind == "supplier":
            min_order = next(o.min_order for o in network.offers if o.offer_id == c.offer_id)
        q = leg_quantity(c.can_give, remaining, product, min_order)
        if q <= 0:
            continue
        if q != c.quantity:
            costed = _recost(c, q, need, network, now, policy)
            c.quantity, c.terms = costed.quantity, costed.terms
        c.chosen = True
        chosen.append(c)
        remaining -= q
    strategy = "split" if chosen else "none"
    return Match(need, [_allocation(c) for c in chosen], remaining, strategy, cands)


def _allocation(c: Candidate) -> Allocation:
    assert c.terms is not None
    return Allocation(
        kind=c.kind,
        source_id=c.source_id,
        offer_id=c.offer_id,
        quantity=c.quantity,
        unit_price=c.unit_price,
        lead_time_hours=c.lead_time_hours,
        terms=c.terms,
    )


def priority(need: Need, network: Network) -> tuple[int, int, datetime | None, str]:
    """Sort key: at-risk outlets first, then pareto A before B before C, then the earliest
    needed-by, then the oldest request."""
    outlet = network.outlets.get(need.outlet_id)
    at_risk = 0 if outlet is not None and outlet.status == "at_risk" else 1
    pareto = PARETO_RANK.get(network.product(need.sku).pareto_class, 2)
    return (at_risk, pareto, need.needed_by, need.request_id)


def _sort_key(need: Need, network: Network) -> tuple[int, int, float, float, str]:
    at_risk, pareto, needed_by, rid = priority(need, network)
    return (
        at_risk,
        pareto,
        needed_by.timestamp() if needed_by else math.inf,
        need.created_at.timestamp() if need.created_at else math.inf,
        rid,
    )


def consume(network: Network, m: Match) -> None:
    """Take a match's allocations out of the network, so later needs see what is left."""
    offers = {o.offer_id: o for o in network.offers}
    for a in m.allocations:
        if a.kind == "outlet":
            key = (a.source_id, m.need.sku)
            s = network.stock[key]
            network.stock[key] = replace(s, available=s.available - a.quantity)
        elif a.offer_id is not None:
            o = offers[a.offer_id]
            offers[a.offer_id] = replace(o, quantity=o.quantity - a.quantity)
    network.offers = list(offers.values())


def allocate(
    needs: Sequence[Need],
    network: Network,
    now: datetime,
    policy: Policy | None = None,
    exclude: dict[str, frozenset[str]] | None = None,
) -> list[Match]:
    """Match several needs against one network, highest priority first, each seeing only
    what the ones before it left (the network passed in is not changed)."""
    net = Network(
        outlets=dict(network.outlets),
        stock=dict(network.stock),
        offers=list(network.offers),
        products=dict(network.products),
    )
    out: list[Match] = []
    for need in sorted(needs, key=lambda n: _sort_key(n, net)):
        m = match(need, net, now, policy, (exclude or {}).get(need.request_id, frozenset()))
        consume(net, m)
        out.append(m)
    return out
