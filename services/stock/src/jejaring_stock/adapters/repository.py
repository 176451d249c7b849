"""SQL for the stock tables. Runs inside the caller's transaction and never commits."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.db import column_values, upsert_insert

from ..domain.model import Level, ReservationStatus
from .tables import LEVELS, MOVEMENTS, OUTLETS, RESERVATIONS

_LEVEL_FIELDS = (
    "on_hand",
    "reserved",
    "reorder_point",
    "maximum",
    "safety_stock",
    "rop_pinned",
    "max_pinned",
    "auto_restock",
    "lead_time_days",
    "velocity",
    "low_flag",
    "out_flag",
    "surplus_flag",
    "negative_flag",
)
_L = LEVELS.c
_M = MOVEMENTS.c
_R = RESERVATIONS.c


_MOVE_FIELDS = (
    ("sku", "text"),
    ("kind", "text"),
    ("quantity", "int"),
    ("reason", "text"),
    ("occurred_at", "timestamptz"),
    ("idempotency_key", "text"),
    ("reference", "text"),
)
"""What varies per movement; outlet, actor and recording time are the same for a batch."""
# PostgreSQL takes a batch as one JSON parameter expanded by json_to_recordset: asyncpg
# encodes one string instead of checking every array element against the collections ABCs
# (that check cost more than the insert). One statement inserts what is new and adds it
# to the (already locked) levels, so on hand cannot drift from the ledger.
# Built from the fixed column list here, never from input.
_PG_INSERT_MOVEMENTS = sa.text(
    "WITH ins AS ("  # noqa: S608
    "INSERT INTO movements (outlet_id, actor, recorded_at, {cols}) "
    "SELECT CAST(:outlet_id AS text), CAST(:actor AS text), CAST(:now AS timestamptz), {cols} "
    "FROM json_to_recordset(CAST(:moves AS json)) AS v({defs}) "
    "ON CONFLICT (outlet_id, idempotency_key) DO NOTHING "
    "RETURNING sku, quantity, idempotency_key), "
    "applied AS (UPDATE stock_levels AS l "
    "SET on_hand = l.on_hand + d.delta, updated_at = CAST(:now AS timestamptz) "
    "FROM (SELECT sku, sum(quantity) AS delta FROM ins GROUP BY sku) AS d "
    "WHERE l.outlet_id = CAST(:outlet_id AS text) AND l.sku = d.sku) "
    "SELECT array_agg(idempotency_key) FROM ins".format(
        cols=", ".join(c for c, _ in _MOVE_FIELDS),
        defs=", ".join(f"{c} {t}" for c, t in _MOVE_FIELDS),
    )
)
_LEVEL_ORDER = ", ".join(f"l.{f.name}" for f in dataclasses.fields(Level))
# The whole of a batch at an outlet none of whose levels this transaction holds yet, in one
# round trip: check the outlet, lock the levels (sorted, as lock_levels does, and all of them
# before the first insert: the one-time filter runs `locked` to the end first), insert
# what is new, add it to on hand, and hand back the inserted keys and the new levels.
# Levels that do not exist yet get no update here; the caller creates them.
_PG_APPLY_MOVEMENTS = sa.text(
    "WITH v AS (SELECT * FROM json_to_recordset(CAST(:moves AS json)) AS v({defs})), "  # noqa: S608
    "outlet AS (SELECT id FROM outlets WHERE id = CAST(:outlet_id AS text)), "
    "locked AS (SELECT l.sku FROM stock_levels AS l "
    "WHERE l.outlet_id = CAST(:outlet_id AS text) AND l.sku = ANY(CAST(:skus AS text[])) "
    "ORDER BY l.sku FOR UPDATE), "
    "ins AS (INSERT INTO movements (outlet_id, actor, recorded_at, {cols}) "
    "SELECT CAST(:outlet_id AS text), CAST(:actor AS text), CAST(:now AS timestamptz), {cols} "
    "FROM v WHERE EXISTS (SELECT FROM outlet) AND (SELECT count(*) FROM locked) >= 0 "
    "ON CONFLICT (outlet_id, idempotency_key) DO NOTHING "
    "RETURNING sku, quantity, idempotency_key), "
    "upd AS (UPDATE stock_levels AS l "
    "SET on_hand = l.on_hand + d.delta, updated_at = CAST(:now AS timestamptz) "
    "FROM (SELECT sku, sum(quantity) AS delta FROM ins GROUP BY sku) AS d "
    "WHERE l.outlet_id = CAST(:outlet_id AS text) AND l.sku = d.sku "
    "RETURNING {levels}) "
    # The inserted keys go out once, not on each level's row: a copy per row was 100 x 500
    # keys to encode and decode for a typical batch (a quarter of the statement's time).
    "SELECT EXISTS (SELECT FROM outlet), "
    "CASE WHEN row_number() OVER () = 1 THEN (SELECT array_agg(idempotency_key) FROM ins) END, "
    "upd.* FROM (SELECT 1) AS one LEFT JOIN upd ON true".format(
        cols=", ".join(c for c, _ in _MOVE_FIELDS),
        defs=", ".join(f"{c} {t}" for c, t in _MOVE_FIELDS),
        levels=_LEVEL_ORDER,
    )
)
_LEVEL_TYPES = {
    "on_hand": "int",
    "reserved": "int",
    "reorder_point": "int",
    "maximum": "int",
    "safety_stock": "int",
    "rop_pinned": "boolean",
    "max_pinned": "boolean",
    "auto_restock": "boolean",
    "lead_time_days": "float8",
    "velocity": "float8",
    "low_flag": "boolean",
    "out_flag": "boolean",
    "surplus_flag": "boolean",
    "negative_flag": "boolean",
    "updated_at": "timestamptz",
}
_SAVED = tuple(_LEVEL_TYPES)
_PG_UPDATE_LEVELS = sa.text(
    "UPDATE stock_levels AS l SET {sets} "  # noqa: S608
    "FROM json_to_recordset(CAST(:rows AS json)) AS v({defs}) "
    "WHERE l.outlet_id = v.b_outlet AND l.sku = v.b_sku".format(
        sets=", ".join(f"{c} = v.{c}" for c in _SAVED),
        defs=", ".join(
            f"{c} {t}" for c, t in (("b_outlet", "text"), ("b_sku", "text"), *_LEVEL_TYPES.items())
        ),
    )
)


def _json_rows(rows: list[dict[str, Any]]) -> str:
    # orjson: the stdlib encoder was a tenth of a 500-line batch's time. Everything stored
    # is UTC, and a naive datetime (SQLite hands those back) is UTC too.
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()


def _lock_statements(*, pg: bool) -> tuple[Any, Any]:
    """SELECT ... FOR UPDATE of an outlet's levels (columns in Level's field order), alone
    and joined to the outlet's row. Built once: the statements are the same every time."""
    skus = (
        _L.sku == sa.any_(sa.bindparam("skus", type_=ARRAY(sa.String)))
        if pg
        else _L.sku.in_(sa.bindparam("skus", expanding=True))
    )
    levels = (
        sa.select(*(LEVELS.c[f.name] for f in dataclasses.fields(Level)))
        .where(_L.outlet_id == sa.bindparam("outlet_id"), skus)
        .order_by(_L.sku)
        .with_for_update()
    )
    locked = levels.cte("locked")
    # FOR UPDATE cannot reach the nullable side of an outer join; in a CTE it can.
    at_outlet = (
        sa.select(OUTLETS.c.id, *locked.c)
        .select_from(OUTLETS.outerjoin(locked, sa.true()))
        .where(OUTLETS.c.id == sa.bindparam("outlet_id"))
    )
    return levels, at_outlet


_LOCK_SQLITE, _LOCK_AT_OUTLET_SQLITE = _lock_statements(pg=False)
_LOCK_PG, _LOCK_AT_OUTLET_PG = _lock_statements(pg=True)
_LOCK = {False: _LOCK_SQLITE, True: _LOCK_PG}
_LOCK_AT_OUTLET = {False: _LOCK_AT_OUTLET_SQLITE, True: _LOCK_AT_OUTLET_PG}


def level_from_row(row: Any) -> Level:
    m = row._mapping
    return Level(outlet_id=m["outlet_id"], sku=m["sku"], **{f: m[f] for f in _LEVEL_FIELDS})


# -- outlets --------------------------------------------------------------------------------


# Statements of the reservation path (a command per leg), built once with bound
# parameters: building a statement and its cache key cost more than running it.
_OUTLET = sa.select(OUTLETS).where(OUTLETS.c.id == sa.bindparam("b_id"))
_OUTLET_LOCKED = _OUTLET.with_for_update()


async def get_outlet(
    conn: AsyncConnection, outlet_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    row = (await conn.execute(_OUTLET_LOCKED if lock else _OUTLET, {"b_id": outlet_id})).first()
    return dict(row._mapping) if row else None


async def list_outlets(
    conn: AsyncConnection, *, status: str | None, region: str | None
) -> list[dict[str, Any]]:
    q = sa.select(OUTLETS).order_by(OUTLETS.c.id)
    if status:
        q = q.where(OUTLETS.c.status == status)
    if region:
        q = q.where(OUTLETS.c.region == region)
    return [dict(r._mapping) for r in await conn.execute(q)]


async def insert_outlet(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """False when the id is taken."""
    stmt = upsert_insert(conn, OUTLETS).values(**values).on_conflict_do_nothing()
    return (await conn.execute(stmt)).rowcount == 1


async def update_outlet(conn: AsyncConnection, outlet_id: str, values: dict[str, Any]) -> None:
    await conn.execute(sa.update(OUTLETS).where(OUTLETS.c.id == outlet_id).values(**values))


# -- levels ---------------------------------------------------------------------------------


async def ensure_levels(
    conn: AsyncConnection, outlet_id: str, skus: Iterable[str], now: datetime
) -> None:
    rows = []
    for sku in skus:
        fresh = Level(outlet_id, sku)
        rows.append(
            {
                "outlet_id": outlet_id,
                "sku": sku,
                "updated_at": now,
                **{f: getattr(fresh, f) for f in _LEVEL_FIELDS},
            }
        )
    if rows:
        await conn.execute(upsert_insert(conn, LEVELS).on_conflict_do_nothing(), rows)


async def lock_levels(
    conn: AsyncConnection, outlet_id: str, skus: Sequence[str]
) -> dict[str, Level]:
    """Load and lock the levels (PostgreSQL: FOR UPDATE; SQLite's BEGIN IMMEDIATE already
    holds the write lock). Sorted, so two transactions lock in the same order."""
    stmt = _LOCK[conn.dialect.name == "postgresql"]
    rows = await conn.execute(stmt, {"outlet_id": outlet_id, "skus": sorted(set(skus))})
    return {r[1]: Level(*r) for r in rows}


async def lock_outlet_levels(
    conn: AsyncConnection, outlet_id: str, skus: Sequence[str]
) -> dict[str, Level] | None:
    """lock_levels and the outlet's existence in one round trip; None: no such outlet."""
    stmt = _LOCK_AT_OUTLET[conn.dialect.name == "postgresql"]
    rows = (await conn.execute(stmt, {"outlet_id": outlet_id, "skus": sorted(set(skus))})).all()
    if not rows:
        return None
    return {r[2]: Level(*r[1:]) for r in rows if r[2] is not None}


_UPDATE_LEVELS = (
    sa.update(LEVELS)
    .where(_L.outlet_id == sa.bindparam("b_outlet"), _L.sku == sa.bindparam("b_sku"))
    .values({f: sa.bindparam(f) for f in (*_LEVEL_FIELDS, "updated_at")})
)


async def save_levels(conn: AsyncConnection, levels: Iterable[Level], now: datetime) -> None:
    rows = [
        {
            "b_outlet": lv.outlet_id,
            "b_sku": lv.sku,
            "updated_at": now,
            **{f: getattr(lv, f) for f in _LEVEL_FIELDS},
        }
        for lv in levels
    ]
    if rows and conn.dialect.name == "postgresql":
        await conn.execute(_PG_UPDATE_LEVELS, {"rows": _json_rows(rows)})
    elif rows:
        await conn.execute(_UPDATE_LEVELS, rows)


async def read_levels(
    conn: AsyncConnection, outlet_id: str, now: datetime, sku: str | None = None
) -> list[tuple[Level, int]]:
    """Levels with the units of reservations that expired but are not swept yet: those
    stop counting at once, whatever the sweeper's pace."""
    stale = (
        sa.select(_R.sku, sa.func.sum(_R.quantity).label("units"))
        .where(
            _R.outlet_id == outlet_id,
            _R.status == ReservationStatus.ACTIVE.value,
            _R.expires_at <= now,
        )
        .group_by(_R.sku)
        .subquery()
    )
    q = (
        sa.select(LEVELS, sa.func.coalesce(stale.c.units, 0).label("stale"))
        .outerjoin(stale, stale.c.sku == _L.sku)
        .where(_L.outlet_id == outlet_id)
        .order_by(_L.sku)
    )
    if sku is not None:
        q = q.where(_L.sku == sku)
    return [(level_from_row(r), int(r.stale)) for r in await conn.execute(q)]


async def all_level_keys(conn: AsyncConnection) -> list[tuple[str, str]]:
    rows = await conn.execute(sa.select(_L.outlet_id, _L.sku).order_by(_L.outlet_id, _L.sku))
    return [(r.outlet_id, r.sku) for r in rows]


# -- movements ------------------------------------------------------------------------------


async def insert_movements(
    conn: AsyncConnection,
    outlet_id: str,
    actor: str,
    now: datetime,
    moves: list[dict[str, Any]],
) -> set[str]:
    """Insert the movements not recorded before (by idempotency key) and add what was
    inserted to the on hand of their levels, which the caller has locked. `moves` hold
    the _MOVE_FIELDS (reason and reference may be left out). Returns the idempotency keys
    inserted (the others were recorded before)."""
    if not moves:
        return set()
    if conn.dialect.name == "postgresql":
        params = {"outlet_id": outlet_id, "actor": actor, "now": now, "moves": _json_rows(moves)}
        inserted = (await conn.execute(_PG_INSERT_MOVEMENTS, params)).scalar()
        return set(inserted or ())
    stmt = (
        upsert_insert(conn, MOVEMENTS)
        .on_conflict_do_nothing(index_elements=["outlet_id", "idempotency_key"])
        .returning(_M.sku, _M.quantity, _M.idempotency_key)
    )
    common = {"outlet_id": outlet_id, "actor": actor, "recorded_at": now}
    rows = [{"reason": None, "reference": None, **m, **common} for m in moves]
    keys: set[str] = set()
    deltas: dict[str, int] = {}
    for sku, quantity, key in await conn.execute(stmt, rows):
        keys.add(key)
        deltas[sku] = deltas.get(sku, 0) + quantity
    await add_on_hand(conn, outlet_id, deltas, now)
    return keys


async def apply_movements(
    conn: AsyncConnection,
    outlet_id: str,
    actor: str,
    now: datetime,
    moves: list[dict[str, Any]],
) -> tuple[set[str], dict[str, Level]] | None:
    """PostgreSQL, for levels this transaction has not locked yet: insert_movements with
    the outlet check and the locking of the levels in the same round trip. Returns the
    inserted keys and the levels they changed, as they are now (a level that does not
    exist yet is not among them: its movements are in, its level is for the caller to
    create and update); None when the outlet does not exist (then nothing was written)."""
    params = {
        "outlet_id": outlet_id,
        "actor": actor,
        "now": now,
        "moves": _json_rows(moves),
        # Given apart (an index lookup): the planner cannot size what the JSON expands to.
        "skus": sorted({m["sku"] for m in moves}),
    }
    rows = (await conn.execute(_PG_APPLY_MOVEMENTS, params)).all()
    if not rows[0][0]:
        return None
    levels = {r[3]: Level(*r[2:]) for r in rows if r[3] is not None}
    inserted = next((r[1] for r in rows if r[1] is not None), ())
    return set(inserted), levels


async def add_on_hand(
    conn: AsyncConnection, outlet_id: str, deltas: dict[str, int], now: datetime
) -> None:
    """Add to the on hand of locked levels (what insert_movements does for its levels)."""
    if deltas:
        await conn.execute(
            sa.update(LEVELS)
            .where(_L.outlet_id == outlet_id, _L.sku == sa.bindparam("b_sku"))
            .values(on_hand=_L.on_hand + sa.bindparam("b_delta"), updated_at=now),
            [{"b_sku": sku, "b_delta": delta} for sku, delta in deltas.items()],
        )


async def existing_keys(conn: AsyncConnection, outlet_id: str, keys: Sequence[str]) -> set[str]:
    q = sa.select(_M.idempotency_key).where(
        _M.outlet_id == outlet_id, _M.idempotency_key.in_(list(keys))
    )
    return {r[0] for r in await conn.execute(q)}


async def quantities_by_key(
    conn: AsyncConnection, outlet_id: str, keys: Sequence[str]
) -> dict[str, int]:
    """The quantity of each movement already recorded under one of these keys."""
    if not keys:
        return {}
    q = sa.select(_M.idempotency_key, _M.quantity).where(
        _M.outlet_id == outlet_id, _M.idempotency_key.in_(list(keys))
    )
    return {r[0]: int(r[1]) for r in await conn.execute(q)}


async def list_movements(
    conn: AsyncConnection, outlet_id: str, *, sku: str | None, after_id: int, limit: int
) -> list[dict[str, Any]]:
    q = sa.select(MOVEMENTS).where(_M.outlet_id == outlet_id, _M.id > after_id)
    if sku:
        q = q.where(_M.sku == sku)
    q = q.order_by(_M.id).limit(limit)
    return [dict(r._mapping) for r in await conn.execute(q)]


async def ledger_sums(
    conn: AsyncConnection, outlet_id: str | None = None
) -> dict[tuple[str, str], int]:
    q = sa.select(_M.outlet_id, _M.sku, sa.func.sum(_M.quantity)).group_by(_M.outlet_id, _M.sku)
    if outlet_id is not None:
        q = q.where(_M.outlet_id == outlet_id)
    return {(r[0], r[1]): int(r[2]) for r in await conn.execute(q)}


async def daily_sales(
    conn: AsyncConnection, since: datetime, until: datetime
) -> list[tuple[str, str, str, int]]:
    """(outlet, sku, UTC day as YYYY-MM-DD, units sold) in [since, until), by the time of
    sale."""
    # PostgreSQL's date() of a timestamptz follows the session's time zone, which nothing
    # sets; SQLite holds UTC already (times are made UTC at the API).
    pg = conn.dialect.name == "postgresql"
    day = sa.func.date(sa.func.timezone("UTC", _M.occurred_at) if pg else _M.occurred_at)
    q = (
        sa.select(_M.outlet_id, _M.sku, day, -sa.func.sum(_M.quantity))
        .where(_M.kind == "sale", _M.occurred_at >= since, _M.occurred_at < until)
        .group_by(_M.outlet_id, _M.sku, day)
    )
    return [(r[0], r[1], str(r[2]), int(r[3])) for r in await conn.execute(q)]


# -- reservations ---------------------------------------------------------------------------


_RESERVATION = sa.select(RESERVATIONS).where(_R.leg_id == sa.bindparam("b_leg"))
_INSERT_RESERVATION = sa.insert(RESERVATIONS)
_EXPIRED_FOR_LEVEL = sa.select(RESERVATIONS).where(
    _R.outlet_id == sa.bindparam("b_outlet"),
    _R.sku == sa.bindparam("b_sku"),
    _R.status == ReservationStatus.ACTIVE.value,
    _R.expires_at <= sa.bindparam("b_now"),
)


async def get_reservation(conn: AsyncConnection, leg_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(_RESERVATION, {"b_leg": leg_id})).first()
    return dict(row._mapping) if row else None


async def insert_reservation(conn: AsyncConnection, values: dict[str, Any]) -> None:
    row = column_values(RESERVATIONS, values)  # refused before the database is asked
    await conn.execute(_INSERT_RESERVATION, row)


async def close_reservation(
    conn: AsyncConnection, res_id: int, status: str, reason: str, now: datetime
) -> None:
    await conn.execute(
        sa.update(RESERVATIONS)
        .where(_R.id == res_id)
        .values(status=status, reason=reason, closed_at=now)
    )


async def expired_for_level(
    conn: AsyncConnection, outlet_id: str, sku: str, now: datetime
) -> list[dict[str, Any]]:
    params = {"b_outlet": outlet_id, "b_sku": sku, "b_now": now}
    return [dict(r._mapping) for r in await conn.execute(_EXPIRED_FOR_LEVEL, params)]


async def expired_level_keys(
    conn: AsyncConnection, now: datetime, limit: int
) -> list[tuple[str, str]]:
    q = (
        sa.select(_R.outlet_id, _R.sku)
        .where(_R.status == ReservationStatus.ACTIVE.value, _R.expires_at <= now)
        .group_by(_R.outlet_id, _R.sku)
        .limit(limit)
    )
    return [(r[0], r[1]) for r in await conn.execute(q)]


async def list_reservations(
    conn: AsyncConnection, outlet_id: str, *, statuses: Sequence[str] | None
) -> list[dict[str, Any]]:
    q = sa.select(RESERVATIONS).where(_R.outlet_id == outlet_id).order_by(_R.id)
    if statuses:
        q = q.where(_R.status.in_(statuses))
    return [dict(r._mapping) for r in await conn.execute(q)]


async def active_reserved_sums(
    conn: AsyncConnection, outlet_id: str | None = None
) -> dict[tuple[str, str], int]:
    q = (
        sa.select(_R.outlet_id, _R.sku, sa.func.sum(_R.quantity))
        .where(_R.status == ReservationStatus.ACTIVE.value)
        .group_by(_R.outlet_id, _R.sku)
    )
    if outlet_id is not None:
        q = q.where(_R.outlet_id == outlet_id)
    return {(r[0], r[1]): int(r[2]) for r in await conn.execute(q)}
