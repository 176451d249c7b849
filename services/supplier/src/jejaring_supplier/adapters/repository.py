"""Small reads and writes of the supplier's tables; never commits (the unit of work does)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.db import UnitOfWork

from .tables import assignments, catalog_products, suppliers


async def conn_of(uow: UnitOfWork) -> AsyncConnection:
    return await uow.session.connection()


def as_dict(row: Row[Any]) -> dict[str, Any]:
    # SQLite hands back naive datetimes; every time is written in UTC.
    return {
        k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
        for k, v in row._mapping.items()
    }


async def one(conn: AsyncConnection, stmt: sa.Select[Any]) -> dict[str, Any] | None:
    row = (await conn.execute(stmt)).first()
    return as_dict(row) if row is not None else None


async def many(conn: AsyncConnection, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
    return [as_dict(r) for r in await conn.execute(stmt)]


async def supplier(conn: AsyncConnection, supplier_id: str) -> dict[str, Any] | None:
    return await one(conn, sa.select(suppliers).where(suppliers.c.id == supplier_id))


async def product(
    conn: AsyncConnection, sku: str, *, for_share: bool = False
) -> dict[str, Any] | None:
    stmt = sa.select(catalog_products).where(catalog_products.c.sku == sku)
    if for_share:
        stmt = stmt.with_for_update(read=True)  # FOR SHARE on PostgreSQL; SQLite serialises
    return await one(conn, stmt)


async def assignment(
    conn: AsyncConnection, leg_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    stmt = sa.select(assignments).where(assignments.c.leg_id == leg_id)
    if for_update:
        # Serialises concurrent retries of one leg on PostgreSQL (SQLite already does).
        stmt = stmt.with_for_update()
    return await one(conn, stmt)
