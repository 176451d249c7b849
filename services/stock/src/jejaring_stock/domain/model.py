"""Stock rules as plain code: levels, crossing events, sales rates, pareto classes.

Nothing here touches the database or Kafka; the application layer loads levels, calls
these rules and stores what they decide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from jejaring_shared.contracts import Payload
from jejaring_shared.contracts.stock import (
    StockDiscrepancy,
    StockLevelChanged,
    StockLow,
    StockOut,
    StockSurplus,
)

TRANSFER_OUT_KEY = "transfer_out:"
TRANSFER_IN_KEY = "transfer_in:"
OPENING_KEY = "opening:"
SYSTEM_KEY_PREFIXES = (TRANSFER_OUT_KEY, TRANSFER_IN_KEY, OPENING_KEY)
"""How the idempotency keys stock makes for its own movements begin (followed by a leg
id or a sku). Movements are unique per outlet and key, so a client's key may not begin
so: a sale keyed `transfer_out:<leg>` would make that leg's dispatch a "duplicate"."""


class MovementKind(StrEnum):
    RECEIPT = "receipt"
    SALE = "sale"
    ADJUSTMENT = "adjustment"
    WRITE_OFF = "write_off"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    RETURN = "return"


MAX_LEVEL = 10_000_000
"""Most units a count, an opening or a planning figure may say: far above any outlet,
and within every database's integer columns (a reorder point derived from it too)."""


class OutletStatus(StrEnum):
    ACTIVE = "active"
    AT_RISK = "at_risk"
    CLOSED = "closed"


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    DISPATCHED = "dispatched"


@dataclass
class Level:
    """One outlet's stock of one sku: the ledger's projection plus its planning figures."""

    outlet_id: str
    sku: str
    on_hand: int = 0
    reserved: int = 0
    reorder_point: int = 0
    maximum: int = 0
    safety_stock: int = 0
    rop_pinned: bool = False
    max_pinned: bool = False
    auto_restock: bool = True
    lead_time_days: float | None = None
    velocity: float = 0.0
    # A new level has nothing available, which already is "low" and "out": no event for it.
    low_flag: bool = True
    out_flag: bool = True
    surplus_flag: bool = False
    negative_flag: bool = False

    @property
    def key(self) -> str:
        return f"{self.outlet_id}:{self.sku}"

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def days_of_cover(self, available: int | None = None) -> float | None:
        if self.velocity <= 0:
            return None
        return round(max(self.available if available is None else available, 0) / self.velocity, 2)


def crossing_events(level: Level, *, cover_limit_days: float) -> list[Payload]:
    """Events for a level that just changed: each alert once per crossing, then
    stock.level_changed. Updates the level's crossing flags."""
    events: list[Payload] = []
    o, s, avail = level.outlet_id, level.sku, level.available

    if level.out_flag and 0 < avail <= level.reorder_point:
        # Leaving "out" but still low (a new level's first stock, or a partial refill) is
        # announced as low: a new level starts flagged low unannounced, and auto-restock
        # hears of a shortage only through stock.low.
        level.low_flag = False
    if avail <= level.reorder_point:
        if not level.low_flag:
            events.append(
                StockLow(
                    outlet_id=o,
                    sku=s,
                    available=avail,
                    reorder_point=level.reorder_point,
                    auto_restock=level.auto_restock,
                )
            )
        level.low_flag = True
    else:
        level.low_flag = False

    if avail <= 0:
        if not level.out_flag:
            events.append(StockOut(outlet_id=o, sku=s))
        level.out_flag = True
    else:
        level.out_flag = False

    cover = level.days_of_cover()
    over = (level.maximum > 0 and avail > level.maximum) or (
        cover is not None and cover > cover_limit_days
    )
    if over:
        if not level.surplus_flag:
            events.append(StockSurplus(outlet_id=o, sku=s, available=avail, maximum=level.maximum))
        level.surplus_flag = True
    else:
        level.surplus_flag = False

    if level.on_hand < 0:
        if not level.negative_flag:
            events.append(StockDiscrepancy(outlet_id=o, sku=s, on_hand=level.on_hand))
        level.negative_flag = True
    else:
        level.negative_flag = False

    events.append(
        StockLevelChanged(
            outlet_id=o,
            sku=s,
            on_hand=level.on_hand,
            reserved=level.reserved,
            available=avail,
            reorder_point=level.reorder_point,
            maximum=level.maximum or None,  # 0: no maximum set
            daily_rate=level.velocity,
        )
    )
    return events


def smoothed_rate(daily_units: Iterable[int], alpha: float) -> float:
    """Exponentially smoothed units per day over consecutive days, oldest first."""
    rate: float | None = None
    for units in daily_units:
        rate = float(units) if rate is None else alpha * units + (1 - alpha) * rate
    return round(rate or 0.0, 4)


def derived_levels(
    rate: float, *, lead_time_days: float, safety_stock: int, review_days: float
) -> tuple[int, int]:
    """Reorder point = rate x lead time + safety stock; maximum adds a review period."""
    reorder_point = math.ceil(rate * lead_time_days) + safety_stock
    maximum = reorder_point + math.ceil(rate * review_days)
    return reorder_point, maximum


def pareto_classes(units_by_sku: Mapping[str, int]) -> dict[str, str]:
    """A: the best sellers that make up the first 80% of units sold; B: up to 95%; C: the rest.

    The sku that crosses 80% is still A (it is part of what makes up the 80%)."""
    total = sum(max(u, 0) for u in units_by_sku.values())
    classes: dict[str, str] = {}
    running = 0
    for sku, units in sorted(units_by_sku.items(), key=lambda kv: (-kv[1], kv[0])):
        before = running
        running += max(units, 0)
        if total <= 0 or units <= 0:
            classes[sku] = "C"
        elif before < 0.8 * total:
            classes[sku] = "A"
        elif before < 0.95 * total:
            classes[sku] = "B"
        else:
            classes[sku] = "C"
    return classes
