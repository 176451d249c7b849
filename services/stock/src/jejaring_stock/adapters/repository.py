"""SQL for the stock tables. Runs inside the caller's transaction and never commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

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


_MOVEMENT_COLUMNS = (
    ("outlet_id", "text"),
    ("sku", "text"),
    ("kind", "text"),
    ("quantity", "int"),
    ("reason", "text"),
    ("actor", "text"),
    ("occurred_at", "timestamptz"),
    ("recorded_at", "timestamptz"),
    ("idempotency_key", "text"),
    ("reference", "text"),
)
# Built from the fixed column lists above, never from input.
_PG_INSERT_MOVEMENTS = sa.text(
    "INSERT INTO movements ({cols}) SELECT * FROM unnest({arrays}) "  # noqa: S608
    "ON CONFLICT (outlet_id, idempotency_key) DO NOTHING RETURNING idempotency_key".format(
        cols=", ".join(c for c, _ in _MOVEMENT_COLUMNS),
        arrays=", ".join(f"CAST(:{c} AS {t}[])" for c, t in _MOVEMENT_COLUMNS),
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
    "UPDATE stock_levels AS l SET {sets} FROM unnest({arrays}) AS v({names}) "  # noqa: S608
    "WHERE l.outlet_id = v.b_outlet AND l.sku = v.b_sku".format(
        sets=", ".join(f"{c} = v.{c}" for c in _SAVED),
        arrays=", ".join(
            f"CAST(:{c} AS {t}[])"
            for c, t in (("b_outlet", "text"), ("b_sku", "text"), *_LEVEL_TYPES.items())
        ),
        names=", ".join(("b_outlet", "b_sku", *_SAVED)),
    )
)


def _columns(rows: list[dict[str, Any]], columns: Iterable[Any]) -> dict[str, list[Any]]:
    names = [c[0] if isinstance(c, tuple) else c for c in columns]
    return {n: [r[n] for r in rows] for n in names}


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def level_from_row(row: Any) -> Level:
    m = row._mapping
    return Level(outlet_id=m["outlet_id"], sku=m["sku"], **{f: m[f] for f in _LEVEL_FIELDS})


# -- outlets --------------------------------------------------------------------------------


async def get_outlet(conn: AsyncConnection, outlet_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(OUTLETS).where(OUTLETS.c.id == outlet_id))).first()
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
    stmt = _insert(conn, OUTLETS).values(**values).on_conflict_do_nothing()
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
        await conn.execute(_insert(conn, LEVELS).on_conflict_do_nothing(), rows)


async def lock_levels(
    conn: AsyncConnection, outlet_id: str, skus: Sequence[str]
) -> dict[str, Level]:
    """Load and lock the levels (PostgreSQL: FOR UPDATE; SQLite's BEGIN IMMEDIATE already
    holds the write lock). Sorted, so two transactions lock in the same order."""
    q = (
        sa.select(LEVELS)
        .where(_L.outlet_id == outlet_id, _L.sku.in_(sorted(set(skus))))
        .order_by(_L.sku)
        .with_for_update()
    )
    return {r.sku: level_from_row(r) for r in await conn.execute(q)}


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
        await conn.execute(_PG_UPDATE_LEVELS, _columns(rows, ("b_outlet", "b_sku", *_SAVED)))
    elif rows:
        stmt = (
            sa.update(LEVELS)
            .where(_L.outlet_id == sa.bindparam("b_outlet"), _L.sku == sa.bindparam("b_sku"))
            .values({f: sa.bindparam(f) for f in (*_LEVEL_FIELDS, "updated_at")})
        )
        await conn.execute(stmt, rows)


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


async def insert_movements(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert what is new; returns the idempotency keys that were inserted (the others
    were recorded before)."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        # One statement with one array per column: far less to bind and parse than
        # hundreds of VALUES tuples.
        result = await conn.execute(_PG_INSERT_MOVEMENTS, _columns(rows, _MOVEMENT_COLUMNS))
        return {r[0] for r in result}
    stmt = (
        _insert(conn, MOVEMENTS)
        .on_conflict_do_nothing(index_elements=["outlet_id", "idempotency_key"])
        .returning(_M.idempotency_key)
    )
    result = await conn.execute(stmt, rows)
    return {r[0] for r in result}


async def existing_keys(conn: AsyncConnection, outlet_id: str, keys: Sequence[str]) -> set[str]:
    q = sa.select(_M.idempotency_key).where(
        _M.outlet_id == outlet_id, _M.idempotency_key.in_(list(keys))
    )
    return {r[0] for r in await conn.execute(q)}


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


async def daily_sales(conn: AsyncConnection, since: datetime) -> list[tuple[str, str, str, int]]:
    """(outlet, sku, day as YYYY-MM-DD, units sold) since a time, by the time of sale."""
    day = sa.func.date(_M.occurred_at)
    q = (
        sa.select(_M.outlet_id, _M.sku, day, -sa.func.sum(_M.quantity))
        .where(_M.kind == "sale", _M.occurred_at >= since)
        .group_by(_M.outlet_id, _M.sku, day)
    )
    return [(r[0], r[1], str(r[2]), int(r[3])) for r in await conn.execute(q)]


# -- reservations ---------------------------------------------------------------------------


async def get_reservation(conn: AsyncConnection, leg_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(RESERVATIONS).where(_R.leg_id == leg_id))).first()
    return dict(row._mapping) if row else None


async def insert_reservation(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(sa.insert(RESERVATIONS).values(**values))


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
    q = sa.select(RESERVATIONS).where(
        _R.outlet_id == outlet_id,
        _R.sku == sku,
        _R.status == ReservationStatus.ACTIVE.value,
        _R.expires_at <= now,
    )
    return [dict(r._mapping) for r in await conn.execute(q)]


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
    conn: AsyncConnection, outlet_id: str, *, status: str | None
) -> list[dict[str, Any]]:
    q = sa.select(RESERVATIONS).where(_R.outlet_id == outlet_id).order_by(_R.id)
    if status:
        q = q.where(_R.status == status)
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
