"""Reads and writes of the catalog's tables; never commits (the unit of work does)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.contracts import utcnow
from jejaring_shared.db import UnitOfWork

from .tables import categories, clusters, products

CHUNK = 500  # keeps IN lists far below SQLite's and asyncpg's parameter limits


async def conn_of(uow: UnitOfWork) -> AsyncConnection:
    return await uow.session.connection()


async def codes(conn: AsyncConnection, table: sa.Table) -> set[str]:
    return set((await conn.execute(sa.select(table.c.code))).scalars())


async def list_codes(conn: AsyncConnection, table: sa.Table) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(table).order_by(table.c.code))
    return [dict(r._mapping) for r in rows]


async def insert_code(conn: AsyncConnection, table: sa.Table, code: str, name: str) -> None:
    await conn.execute(sa.insert(table).values(code=code, name=name, created_at=utcnow()))


async def get_product(
    conn: AsyncConnection, sku: str, *, lock: bool = False
) -> dict[str, Any] | None:
    """`lock`: the row is held until the transaction ends (PostgreSQL; SQLite's writers
    take turns anyway), so a change decided on what was read cannot race a retirement."""
    q = sa.select(products).where(products.c.sku == sku)
    row = (await conn.execute(q.with_for_update() if lock else q)).first()
    return dict(row._mapping) if row else None


async def products_by_sku(
    conn: AsyncConnection, skus: Iterable[str], *, lock: bool = False
) -> dict[str, dict[str, Any]]:
    wanted = sorted(set(skus))  # one lock order for every transaction
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(wanted), CHUNK):
        q = sa.select(products).where(products.c.sku.in_(wanted[i : i + CHUNK]))
        rows = await conn.execute(q.order_by(products.c.sku).with_for_update() if lock else q)
        out.update({r.sku: dict(r._mapping) for r in rows})
    return out


async def barcode_owners(conn: AsyncConnection, barcodes: Iterable[str]) -> dict[str, str]:
    wanted = list(barcodes)
    out: dict[str, str] = {}
    for i in range(0, len(wanted), CHUNK):
        rows = await conn.execute(
            sa.select(products.c.barcode, products.c.sku).where(
                products.c.barcode.in_(wanted[i : i + CHUNK])
            )
        )
        out.update({r.barcode: r.sku for r in rows})
    return out


async def insert_products(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(sa.insert(products), list(rows))


async def update_products(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], now: datetime
) -> None:
    """Each row is a full new state keyed by sku."""
    if not rows:
        return
    cols = [k for k in rows[0] if k != "sku"]
    stmt = (
        sa.update(products)
        .where(products.c.sku == sa.bindparam("b_sku"))
        .values({c: sa.bindparam(f"b_{c}") for c in [*cols, "updated_at"]})
    )
    params = [
        {"b_sku": r["sku"], "b_updated_at": now, **{f"b_{c}": r[c] for c in cols}} for r in rows
    ]
    await conn.execute(stmt, params)


async def retire_product(conn: AsyncConnection, sku: str, now: datetime) -> None:
    await conn.execute(
        sa.update(products)
        .where(products.c.sku == sku)
        .values(status="retired", retired_at=now, updated_at=now)
    )


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_products(
    conn: AsyncConnection,
    *,
    q: str | None,
    barcode: str | None,
    cluster: str | None,
    category: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    where: list[sa.ColumnElement[bool]] = []
    if q:
        where.append(
            sa.or_(
                products.c.name.ilike(_like(q), escape="\\"),
                products.c.sku.ilike(_like(q), escape="\\"),
            )
        )
    if barcode:
        where.append(products.c.barcode == barcode)
    if cluster:
        where.append(products.c.cluster == cluster)
    if category:
        where.append(products.c.category == category)
    if status:
        where.append(products.c.status == status)
    total = (
        await conn.execute(sa.select(sa.func.count()).select_from(products).where(*where))
    ).scalar_one()
    rows = await conn.execute(
        sa.select(products).where(*where).order_by(products.c.sku).limit(limit).offset(offset)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def page_after(
    conn: AsyncConnection, after: str | None, limit: int, status: str | None, cluster: str | None
) -> list[dict[str, Any]]:
    """Keyset pages by sku, for exports that must not load everything at once."""
    where: list[sa.ColumnElement[bool]] = []
    if after is not None:
        where.append(products.c.sku > after)
    if status:
        where.append(products.c.status == status)
    if cluster:
        where.append(products.c.cluster == cluster)
    rows = await conn.execute(
        sa.select(products).where(*where).order_by(products.c.sku).limit(limit)
    )
    return [dict(r._mapping) for r in rows]


__all__ = ["categories", "clusters", "products"]
