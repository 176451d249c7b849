"""What the stock service does, one unit of work at a time.

Routes and command handlers call these functions inside their UnitOfWork; nothing here
commits. Each function that changes stock writes ledger movements and updates the level
projection in the same transaction, and derives the events from the new levels at the end
(`StockTxn.finish`), so an alert reflects what is committed, once per transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.contracts import Envelope, Payload
from jejaring_shared.contracts.stock import (
    DispatchRejected,
    OutletRegistered,
    ReservationRejected,
    ReservationReleased,
    StockDispatched,
    StockReceived,
    StockReserved,
)
from jejaring_shared.csv_import import ImportReport, RowError, read_rows, validate_row
from jejaring_shared.db import UnitOfWork, UnitOfWorkFactory
from jejaring_shared.errors import ApiError

from .adapters import repository as repo
from .domain.model import (
    MAX_LEVEL,
    OPENING_KEY,
    TRANSFER_IN_KEY,
    TRANSFER_OUT_KEY,
    Level,
    MovementKind,
    OutletStatus,
    ReservationStatus,
    crossing_events,
    derived_levels,
    pareto_classes,
    smoothed_rate,
)

log = logging.getLogger(__name__)

_state = operator.attrgetter(*(f.name for f in dataclasses.fields(Level)))
"""A level's fields as a tuple: what finish() compares with what is stored."""
_ON_HAND = [f.name for f in dataclasses.fields(Level)].index("on_hand")


@dataclass(frozen=True)
class Policy:
    """Planning settings the rules need (from StockSettings)."""

    cover_limit_days: float = 60.0
    default_lead_time_days: float = 2.0
    review_days: float = 7.0
    velocity_window_days: int = 28
    velocity_alpha: float = 0.3


def aware(dt: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; everything stored is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class StockTxn:
    """Levels loaded (and locked) in one transaction, and the events their changes raise."""

    def __init__(
        self, uow: UnitOfWork, policy: Policy, now: datetime, cause: Envelope | None = None
    ) -> None:
        self.uow = uow
        self.policy = policy
        self.now = now
        self.cause = cause
        self._levels: dict[tuple[str, str], Level] = {}
        self._stored: dict[tuple[str, str], tuple[Any, ...]] = {}
        """What the database holds for each loaded level, so finish() writes only changes."""
        self._touched: dict[tuple[str, str], Level] = {}

    async def conn(self) -> AsyncConnection:
        return await self.uow.session.connection()

    async def load(
        self,
        outlet_id: str,
        skus: Iterable[str],
        *,
        create: bool = True,
        check_outlet: bool = False,
    ) -> dict[str, Level]:
        """Load and lock levels (creating missing ones unless `create` is false); with
        `check_outlet`, a missing outlet is a 404, checked in the same round trip."""
        wanted = sorted({s for s in skus if (outlet_id, s) not in self._levels})
        conn = await self.conn()
        if wanted:
            if check_outlet:
                locked = await repo.lock_outlet_levels(conn, outlet_id, wanted)
                if locked is None:
                    raise _no_outlet(outlet_id)
                found = locked
            else:
                found = await repo.lock_levels(conn, outlet_id, wanted)
            missing = [s for s in wanted if s not in found]
            if create and missing:
                # Lock first and create only what is missing: one round trip when the
                # skus are known, which is nearly always.
                await repo.ensure_levels(conn, outlet_id, missing, self.now)
                found.update(await repo.lock_levels(conn, outlet_id, missing))
            for sku, level in found.items():
                self._levels[(outlet_id, sku)] = level
                self._stored[(outlet_id, sku)] = _state(level)
        elif check_outlet:
            await require_outlet(conn, outlet_id)
        return {s: self._levels[(outlet_id, s)] for s in skus if (outlet_id, s) in self._levels}

    def touch(self, level: Level) -> None:
        self._touched[(level.outlet_id, level.sku)] = level

    def holds_any(self, outlet_id: str, skus: Iterable[str]) -> bool:
        return any((outlet_id, s) in self._levels for s in skus)

    def adopt(self, levels: Iterable[Level]) -> None:
        """Levels the database locked and changed on its own (apply_movements), as stored."""
        for level in levels:
            key = (level.outlet_id, level.sku)
            self._levels[key] = level
            self._stored[key] = _state(level)
            self._touched[key] = level

    def applied(self, level: Level, delta: int) -> None:
        """The database already added `delta` to this level's on hand (with the movements
        that make it up); keep the loaded level and what is stored in step."""
        level.on_hand += delta
        key = (level.outlet_id, level.sku)
        stored = self._stored.get(key)
        if stored is not None:
            on_hand = stored[_ON_HAND] + delta
            self._stored[key] = (*stored[:_ON_HAND], on_hand, *stored[_ON_HAND + 1 :])
        self.touch(level)

    def publish(self, payload: Payload, key: str) -> None:
        self.uow.publish(payload, key=key, cause=self.cause)

    async def release_expired(self, level: Level) -> None:
        """Expired reservations of this level are released here and now (the sweeper
        would do it soon; a reservation or dispatch must not wait for it)."""
        conn = await self.conn()
        for res in await repo.expired_for_level(conn, level.outlet_id, level.sku, self.now):
            await self.close_reservation(level, res, ReservationStatus.EXPIRED, "expired")

    async def close_reservation(
        self, level: Level, res: dict[str, Any], status: ReservationStatus, reason: str
    ) -> None:
        await repo.close_reservation(await self.conn(), res["id"], status.value, reason, self.now)
        level.reserved -= res["quantity"]
        self.touch(level)
        if status is not ReservationStatus.DISPATCHED:
            self.publish(
                ReservationReleased(
                    outlet_id=level.outlet_id,
                    sku=level.sku,
                    leg_id=res["leg_id"],
                    quantity=res["quantity"],
                    reason=reason,
                ),
                level.key,
            )

    async def finish(self) -> None:
        changed: list[Level] = []
        for key, level in self._touched.items():
            for event in crossing_events(level, cover_limit_days=self.policy.cover_limit_days):
                self.publish(event, level.key)
            # A POS batch usually changes only on hand, which is stored already.
            state = _state(level)
            if state != self._stored.get(key):
                changed.append(level)
                self._stored[key] = state
        if changed:
            await repo.save_levels(await self.conn(), changed, self.now)
        self._touched.clear()


# -- outlets --------------------------------------------------------------------------------


def _outlet_event(o: dict[str, Any]) -> OutletRegistered:
    return OutletRegistered(
        outlet_id=o["id"],
        name=o["name"],
        community=o["community"],
        region=o["region"],
        lat=o["lat"],
        lon=o["lon"],
        status=o["status"],
    )


async def register_outlet(uow: UnitOfWork, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    conn = await uow.session.connection()
    row = {**values, "created_at": now, "updated_at": now}
    if not await repo.insert_outlet(conn, row):
        raise ApiError(409, "outlet_exists", f"outlet {values['id']!r} already exists", "id")
    uow.publish(_outlet_event(row), key=row["id"])
    return row


async def change_outlet(
    uow: UnitOfWork, outlet_id: str, changes: dict[str, Any], now: datetime
) -> dict[str, Any]:
    conn = await uow.session.connection()
    # Locked: two changes at once on PostgreSQL each published the outlet as it read it,
    # and the last one's event could undo the other's (a closed outlet announced active).
    current = await require_outlet(conn, outlet_id, lock=True)
    updated = {**current, **changes, "updated_at": now}
    if updated != {**current, "updated_at": now}:
        await repo.update_outlet(conn, outlet_id, {**changes, "updated_at": now})
        uow.publish(_outlet_event(updated), key=outlet_id)
        return updated
    return current


async def require_outlet(
    conn: AsyncConnection, outlet_id: str, *, lock: bool = False
) -> dict[str, Any]:
    outlet = await repo.get_outlet(conn, outlet_id, lock=lock)
    if outlet is None:
        raise _no_outlet(outlet_id)
    return outlet


def _no_outlet(outlet_id: str) -> ApiError:
    return ApiError(404, "outlet_not_found", f"no outlet {outlet_id!r}", "outlet_id")


# -- movements ------------------------------------------------------------------------------


@dataclass
class MoveIn:
    sku: str
    kind: MovementKind
    quantity: int
    """Signed: what the movement adds to on hand."""
    idempotency_key: str
    occurred_at: datetime
    reason: str | None = None
    reference: str | None = None


@dataclass
class Recorded:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


async def record_movements(
    txn: StockTxn,
    outlet_id: str,
    moves: Sequence[MoveIn],
    actor: str,
    *,
    check_outlet: bool = False,
) -> Recorded:
    """Write movements that were not recorded before (by idempotency key) and apply them
    to the levels, one change per sku. Resent keys, and keys repeated within `moves`, are
    duplicates. With `check_outlet`, an unknown outlet is a 404 (checked while locking)."""
    out = Recorded()
    unique: dict[str, MoveIn] = {}
    for m in moves:
        if m.idempotency_key in unique:
            out.duplicates.append(m.idempotency_key)
        else:
            unique[m.idempotency_key] = m
    skus = {m.sku for m in unique.values()}
    rows = []
    for key, m in unique.items():
        row = {
            "sku": m.sku,
            "kind": str(m.kind),
            "quantity": m.quantity,
            "occurred_at": m.occurred_at,
            "idempotency_key": key,
        }
        # Left out when empty (most lines): less to encode.
        if m.reason is not None:
            row["reason"] = m.reason
        if m.reference is not None:
            row["reference"] = m.reference
        rows.append(row)
    conn = await txn.conn()
    fast = check_outlet and conn.dialect.name == "postgresql" and not txn.holds_any(outlet_id, skus)
    if fast:
        # One round trip for the outlet check, the locks, the inserts and on hand.
        applied = await repo.apply_movements(conn, outlet_id, actor, txn.now, rows)
        if applied is None:
            raise _no_outlet(outlet_id)
        inserted, levels = applied
        txn.adopt(levels.values())
    else:
        levels = await txn.load(outlet_id, skus, check_outlet=check_outlet)
        inserted = await repo.insert_movements(conn, outlet_id, actor, txn.now, rows)
    deltas: dict[str, int] = {}
    for key, m in unique.items():
        if key in inserted:
            deltas[m.sku] = deltas.get(m.sku, 0) + m.quantity
            out.accepted.append(key)
        else:
            out.duplicates.append(key)
    if fast:
        # Skus new at this outlet: their movements are in, their levels are created here.
        fresh = {sku: delta for sku, delta in deltas.items() if sku not in levels}
        if fresh:
            created = await txn.load(outlet_id, fresh)
            await repo.add_on_hand(conn, outlet_id, fresh, txn.now)
            for sku, delta in fresh.items():
                txn.applied(created[sku], delta)
    else:
        for sku, delta in deltas.items():
            txn.applied(levels[sku], delta)
    return out


async def count_stock(
    txn: StockTxn,
    outlet_id: str,
    *,
    sku: str,
    counted: int,
    key: str,
    reason: str,
    actor: str,
    occurred_at: datetime,
) -> tuple[bool, int]:
    """A stock count: an adjustment by the difference to what is on hand.
    Returns (recorded, delta); a resent key records nothing."""
    level = (await txn.load(outlet_id, [sku]))[sku]
    if await repo.existing_keys(await txn.conn(), outlet_id, [key]):
        return False, 0
    delta = counted - level.on_hand
    move = MoveIn(sku, MovementKind.ADJUSTMENT, delta, key, occurred_at, reason)
    # The key may still be taken meanwhile (on PostgreSQL a count of another sku under
    # the same key holds another level's lock): then nothing was recorded, and it says so.
    if not (await record_movements(txn, outlet_id, [move], actor)).accepted:
        return False, 0
    return True, delta


# -- reservations ---------------------------------------------------------------------------


@dataclass
class ReserveOutcome:
    reserved: bool
    reason: str | None
    available: int
    reservation: dict[str, Any] | None = None


async def reserve(
    txn: StockTxn,
    *,
    outlet_id: str,
    sku: str,
    leg_id: str,
    quantity: int,
    expires_in_s: int,
    announce_rejection: bool,
) -> ReserveOutcome:
    """Reserve units for a leg, never beyond what is available. The level row is locked
    first, so concurrent reservations of the same stock queue up behind each other."""
    conn = await txn.conn()
    outlet = await repo.get_outlet(conn, outlet_id)
    level = (await txn.load(outlet_id, [sku], create=False)).get(sku)
    if level is not None:
        await txn.release_expired(level)
    available = level.available if level else 0
    existing = await repo.get_reservation(conn, leg_id)
    reason: str | None = None
    if existing is not None:
        same = (existing["outlet_id"], existing["sku"], existing["quantity"]) == (
            outlet_id,
            sku,
            quantity,
        )
        if same and existing["status"] == ReservationStatus.ACTIVE.value:
            # A repeated command: answer as the first time.
            txn.publish(_reserved_event(existing), f"{outlet_id}:{sku}")
            return ReserveOutcome(True, None, available, existing)
        reason = f"leg_already_{existing['status']}" if same else "leg_reserved_elsewhere"
    elif outlet is None:
        reason = "unknown_outlet"
    elif outlet["status"] == OutletStatus.CLOSED.value:
        reason = "outlet_closed"
    elif level is None or available < quantity:
        reason = "insufficient_stock"
    if reason is not None:
        if announce_rejection:
            txn.publish(
                ReservationRejected(
                    outlet_id=outlet_id,
                    sku=sku,
                    leg_id=leg_id,
                    quantity=quantity,
                    available=available,
                    reason=reason,
                ),
                f"{outlet_id}:{sku}",
            )
        return ReserveOutcome(False, reason, available)
    assert level is not None
    res = {
        "leg_id": leg_id,
        "outlet_id": outlet_id,
        "sku": sku,
        "quantity": quantity,
        "status": ReservationStatus.ACTIVE.value,
        "expires_at": txn.now + timedelta(seconds=expires_in_s),
        "created_at": txn.now,
    }
    await repo.insert_reservation(conn, res)
    level.reserved += quantity
    txn.touch(level)
    txn.publish(_reserved_event(res), level.key)
    return ReserveOutcome(True, None, level.available, res)


def _reserved_event(res: dict[str, Any]) -> StockReserved:
    return StockReserved(
        outlet_id=res["outlet_id"],
        sku=res["sku"],
        leg_id=res["leg_id"],
        quantity=res["quantity"],
        expires_at=aware(res["expires_at"]),
    )


async def _active_reservation(
    txn: StockTxn, leg_id: str
) -> tuple[dict[str, Any] | None, Level | None]:
    """The leg's reservation with its level locked, after releasing what has expired."""
    conn = await txn.conn()
    res = await repo.get_reservation(conn, leg_id)
    if res is None:
        return None, None
    level = (await txn.load(res["outlet_id"], [res["sku"]], create=False))[res["sku"]]
    await txn.release_expired(level)
    return await repo.get_reservation(conn, leg_id), level


async def release(txn: StockTxn, *, leg_id: str, reason: str) -> dict[str, Any] | None:
    """Release a leg's reservation; releasing one that is no longer active changes nothing."""
    res, level = await _active_reservation(txn, leg_id)
    if res is not None and level is not None and res["status"] == ReservationStatus.ACTIVE.value:
        await txn.close_reservation(level, res, ReservationStatus.RELEASED, reason)
        res = await repo.get_reservation(await txn.conn(), leg_id)
    return res


async def dispatch(txn: StockTxn, *, leg_id: str, actor: str) -> tuple[bool, str | None]:
    """The reserved units leave the outlet as a transfer-out. (ok, reason if refused)"""
    res, level = await _active_reservation(txn, leg_id)
    if res is None or level is None:
        return False, "not_reserved"
    if res["status"] == ReservationStatus.DISPATCHED.value:
        return True, None  # resent: it left once
    if res["status"] != ReservationStatus.ACTIVE.value:
        return False, f"reservation_{res['status']}"
    await record_movements(
        txn,
        level.outlet_id,
        [
            MoveIn(
                level.sku,
                MovementKind.TRANSFER_OUT,
                -res["quantity"],
                f"{TRANSFER_OUT_KEY}{leg_id}",
                txn.now,
                reference=leg_id,
            )
        ],
        actor,
    )
    await txn.close_reservation(level, res, ReservationStatus.DISPATCHED, "dispatched")
    txn.publish(
        StockDispatched(
            outlet_id=level.outlet_id, sku=level.sku, leg_id=leg_id, quantity=res["quantity"]
        ),
        level.key,
    )
    return True, None


async def receive(
    txn: StockTxn,
    *,
    outlet_id: str,
    sku: str,
    leg_id: str,
    quantity: int,
    reason: str | None,
    actor: str,
) -> bool:
    """Units of a leg arrived (a transfer-in); False when this leg was received before."""
    key = f"{TRANSFER_IN_KEY}{leg_id}"
    if quantity == 0:
        done = await repo.existing_keys(await txn.conn(), outlet_id, [key])
        if done:
            return False
    move = MoveIn(sku, MovementKind.TRANSFER_IN, quantity, key, txn.now, reason, leg_id)
    # An outlet stock does not know gets no stock (the command is dead-lettered with why).
    recorded = await record_movements(txn, outlet_id, [move], actor, check_outlet=True)
    if not recorded.accepted:
        return False
    txn.publish(
        StockReceived(
            outlet_id=outlet_id, sku=sku, leg_id=leg_id, quantity=quantity, reason=reason
        ),
        f"{outlet_id}:{sku}",
    )
    return True


async def reject_dispatch(
    txn: StockTxn, outlet_id: str, sku: str, leg_id: str, reason: str
) -> None:
    txn.publish(
        DispatchRejected(outlet_id=outlet_id, sku=sku, leg_id=leg_id, reason=reason),
        f"{outlet_id}:{sku}",
    )


# -- background work ------------------------------------------------------------------------


async def sweep_expired(
    uows: UnitOfWorkFactory, policy: Policy, now: datetime, limit: int = 200
) -> int:
    """Release reservations that outlived their expiry; one transaction per level.
    Returns how many levels were swept."""
    async with uows() as uow:
        keys = await repo.expired_level_keys(await uow.session.connection(), now, limit)
    for outlet_id, sku in keys:
        async with uows() as uow:
            txn = StockTxn(uow, policy, now)
            level = (await txn.load(outlet_id, [sku], create=False)).get(sku)
            if level is None:
                continue
            await txn.release_expired(level)
            await txn.finish()
            await uow.commit()
    return len(keys)


def _days(today: date, window: int) -> list[str]:
    """The last `window` complete days, oldest first (today is not over yet)."""
    return [(today - timedelta(days=d)).isoformat() for d in range(window, 0, -1)]


async def sales_by_day(
    uow: UnitOfWork, policy: Policy, now: datetime
) -> tuple[list[str], dict[tuple[str, str], dict[str, int]]]:
    days = _days(now.date(), policy.velocity_window_days)
    since = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
    # Complete days only: today's sales so far (and any dated ahead) are not in the window.
    until = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    conn = await uow.session.connection()
    per: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for outlet_id, sku, day, units in await repo.daily_sales(conn, since, until):
        per[(outlet_id, sku)][day] = units
    return days, per


@dataclass
class Refreshed:
    levels_changed: int = 0
    outlets_failed: list[str] = field(default_factory=list)


async def refresh_velocity(uows: UnitOfWorkFactory, policy: Policy, now: datetime) -> Refreshed:
    """Recompute every level's smoothed daily sales rate from the ledger, and the reorder
    point and maximum derived from it (unless ops pinned them). An outlet whose refresh
    fails keeps its figures and is named; the others go on."""
    async with uows() as uow:
        days, per = await sales_by_day(uow, policy, now)
        keys = await repo.all_level_keys(await uow.session.connection())
    by_outlet: dict[str, list[str]] = defaultdict(list)
    for outlet_id, sku in keys:
        by_outlet[outlet_id].append(sku)
    out = Refreshed()
    for outlet_id, skus in by_outlet.items():
        try:
            out.levels_changed += await _refresh_outlet(
                uows, policy, now, outlet_id, skus, days, per
            )
        except Exception as exc:
            # One outlet's failure (a value its columns cannot hold, say) must not leave
            # every outlet after it unrefreshed, refresh after refresh. Every one is
            # named; the traceback once (the database down fails them all alike).
            out.outlets_failed.append(outlet_id)
            log.warning(
                "sales-rate refresh of outlet %s failed: %r",
                outlet_id,
                exc,
                exc_info=exc if len(out.outlets_failed) == 1 else None,
            )
    return out


async def _refresh_outlet(
    uows: UnitOfWorkFactory,
    policy: Policy,
    now: datetime,
    outlet_id: str,
    skus: list[str],
    days: list[str],
    per: dict[tuple[str, str], dict[str, int]],
) -> int:
    changed = 0
    async with uows() as uow:
        txn = StockTxn(uow, policy, now)
        for sku, level in (await txn.load(outlet_id, skus, create=False)).items():
            sold = per.get((outlet_id, sku), {})
            rate = smoothed_rate((sold.get(d, 0) for d in days), policy.velocity_alpha)
            rop, maximum = derived_levels(
                rate,
                lead_time_days=(
                    policy.default_lead_time_days
                    if level.lead_time_days is None
                    else level.lead_time_days  # 0 is ops' own figure: same-day supply
                ),
                safety_stock=level.safety_stock,
                review_days=policy.review_days,
            )
            before = (level.velocity, level.reorder_point, level.maximum)
            level.velocity = rate
            if not level.rop_pinned:
                level.reorder_point = rop
            if not level.max_pinned:
                level.maximum = max(maximum, level.reorder_point)
            if (level.velocity, level.reorder_point, level.maximum) != before:
                txn.touch(level)
                changed += 1
        await txn.finish()
        await uow.commit()
    return changed


async def network_pareto(uow: UnitOfWork, policy: Policy, now: datetime) -> dict[str, Any]:
    _, per = await sales_by_day(uow, policy, now)
    units: dict[str, int] = defaultdict(int)
    for (_outlet, sku), sold in per.items():
        units[sku] += sum(sold.values())
    classes = pareto_classes(units)
    return {
        "window_days": policy.velocity_window_days,
        "total_units": sum(units.values()),
        "skus": [
            {"sku": sku, "units": units[sku], "class": classes[sku]}
            for sku in sorted(units, key=lambda s: (-units[s], s))
        ],
    }


# -- CSV import of opening stock --------------------------------------------------------------


OPENING_COLUMNS = ("sku", "quantity", "reorder_point", "maximum", "safety_stock")


class OpeningRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    quantity: int = Field(ge=0, le=MAX_LEVEL)
    reorder_point: int | None = Field(default=None, ge=0, le=MAX_LEVEL)
    maximum: int | None = Field(default=None, ge=0, le=MAX_LEVEL)
    safety_stock: int | None = Field(default=None, ge=0, le=MAX_LEVEL)


@dataclass
class OpeningFile:
    """An opening-stock CSV read and validated: its report so far and its good rows."""

    report: ImportReport
    good: dict[str, tuple[int, OpeningRow]]


def parse_opening_stock(text: str, *, max_rows: int = 20_000) -> OpeningFile:
    """Read and validate every row (pure CPU: the route runs it off the event loop)."""
    report = ImportReport()
    rows, errors = read_rows(
        text, columns=OPENING_COLUMNS, required=("sku", "quantity"), max_rows=max_rows
    )
    report.rows = len(rows) + len(errors)
    report.reject(errors)
    good: dict[str, tuple[int, OpeningRow]] = {}
    for line, cells in rows:
        row = validate_row(OpeningRow, line, cells)
        if isinstance(row, list):
            report.reject(row)
        elif row.sku in good:
            first = good[row.sku][0]
            report.reject(
                [
                    RowError(
                        line=line,
                        field="sku",
                        code="duplicate_row",
                        reason=f"sku {row.sku} is already on line {first}",
                    )
                ]
            )
        else:
            good[row.sku] = (line, row)
    return OpeningFile(report, good)


async def import_opening_stock(
    txn: StockTxn, outlet_id: str, parsed: OpeningFile, actor: str
) -> ImportReport:
    """Opening stock per sku from a parsed CSV (sku,quantity[,reorder_point,maximum,
    safety_stock]), with the catalog's row-level report: every bad row with its line and
    reason, the good rows taken. Each sku's opening is one movement keyed
    `opening:<sku>`, so a rerun takes nothing twice (those rows count as unchanged)."""
    report, good = parsed.report, dict(parsed.good)
    # A sku opened before with another quantity: the opening stands (counts and
    # adjustments correct it), and the row says so instead of passing as "unchanged".
    opened = await repo.quantities_by_key(
        await txn.conn(), outlet_id, [f"{OPENING_KEY}{sku}" for sku in good]
    )
    for sku, (line, row) in list(good.items()):
        before = opened.get(f"{OPENING_KEY}{sku}")
        if before is not None and before != row.quantity:
            del good[sku]
            report.reject(
                [
                    RowError(
                        line=line,
                        field="quantity",
                        code="opening_exists",
                        reason=f"{sku} was opened with {before}; record a stock count to "
                        "correct it",
                    )
                ]
            )
    moves = [
        MoveIn(
            sku,
            MovementKind.ADJUSTMENT,
            row.quantity,
            f"{OPENING_KEY}{sku}",
            txn.now,
            "opening stock",
        )
        for sku, (_line, row) in good.items()
    ]
    recorded = await record_movements(txn, outlet_id, moves, actor)
    report.created = len(recorded.accepted)
    report.unchanged = len(recorded.duplicates)
    levels = await txn.load(outlet_id, good)
    for key in recorded.accepted:
        sku = key.removeprefix(OPENING_KEY)
        extra = good[sku][1].model_dump(
            include={"reorder_point", "maximum", "safety_stock"}, exclude_none=True
        )
        if extra:
            apply_settings(levels[sku], extra)
            txn.touch(levels[sku])
    return report.finish()


def apply_settings(level: Level, values: dict[str, Any]) -> None:
    """Ops' settings: a reorder point or maximum given here is pinned (kept when the
    sales rate changes); null unpins it."""
    if "safety_stock" in values and values["safety_stock"] is not None:
        level.safety_stock = values["safety_stock"]
    if "reorder_point" in values:
        level.rop_pinned = values["reorder_point"] is not None
        if values["reorder_point"] is not None:
            level.reorder_point = values["reorder_point"]
    if "maximum" in values:
        level.max_pinned = values["maximum"] is not None
        if values["maximum"] is not None:
            level.maximum = values["maximum"]
    if "auto_restock" in values and values["auto_restock"] is not None:
        level.auto_restock = values["auto_restock"]
    if "lead_time_days" in values:
        level.lead_time_days = values["lead_time_days"]
