"""CSV import and export of products.

An import validates every row, reports each bad one with its line and reason, and applies
the good rows in one transaction (with their events). Rows are upserts by sku: a row equal
to the stored product changes nothing, so the same file can be imported again safely.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from jejaring_shared.contracts import utcnow
from jejaring_shared.csv_import import ImportReport, RowError, read_rows, validate_row
from jejaring_shared.db import UnitOfWork
from jejaring_shared.errors import ApiError

from ..adapters import repository as repo
from ..adapters.tables import categories, clusters
from ..domain.products import (
    CSV_COLUMNS,
    STATE_FIELDS,
    ProductIn,
    created_event,
    rule_errors,
    state_of,
    updated_event,
)

REQUIRED_COLUMNS = ("sku", "name", "unit")


def _err(line: int, field: str, code: str, reason: str) -> RowError:
    return RowError(line=line, field=field, code=code, reason=reason)


def _parse(text: str, max_rows: int, report: ImportReport) -> list[tuple[int, ProductIn]]:
    rows, errors = read_rows(
        text, columns=CSV_COLUMNS, required=REQUIRED_COLUMNS, max_rows=max_rows
    )
    report.rows = len(rows) + len(errors)
    report.reject(errors)
    good: list[tuple[int, ProductIn]] = []
    sku_line: dict[str, int] = {}
    barcode_line: dict[str, int] = {}
    for line, cells in rows:
        product = validate_row(ProductIn, line, cells)
        if isinstance(product, list):
            report.reject(product)
            continue
        broken = rule_errors(product)
        if broken:
            report.reject(_err(line, f, c, m) for f, c, m in broken)
            continue
        if product.sku in sku_line:
            report.reject(
                [
                    _err(
                        line,
                        "sku",
                        "duplicate_sku",
                        f"sku {product.sku!r} is already on line {sku_line[product.sku]}",
                    )
                ]
            )
            continue
        if product.barcode and product.barcode in barcode_line:
            report.reject(
                [
                    _err(
                        line,
                        "barcode",
                        "duplicate_barcode",
                        f"barcode {product.barcode} is already on line "
                        f"{barcode_line[product.barcode]}",
                    )
                ]
            )
            continue
        sku_line[product.sku] = line
        if product.barcode:
            barcode_line[product.barcode] = line
        good.append((line, product))
    return good


async def import_products(
    uow: UnitOfWork, text: str, *, max_rows: int, dry_run: bool = False
) -> ImportReport:
    report = ImportReport(dry_run=dry_run)
    # Validating up to max_rows rows is seconds of CPU: off the event loop, and before
    # the transaction, which it would otherwise hold open.
    good = await asyncio.to_thread(_parse, text, max_rows, report)
    async with uow:
        conn = await repo.conn_of(uow)
        cluster_codes = await repo.codes(conn, clusters)
        category_codes = await repo.codes(conn, categories)
        # Locked: a retirement racing the import waits for it, or the import sees it.
        existing = await repo.products_by_sku(conn, (p.sku for _, p in good), lock=True)
        owners = await repo.barcode_owners(conn, (p.barcode for _, p in good if p.barcode))
        now = utcnow()
        # Sorting up to max_rows rows into new, changed and unchanged, and building their
        # events, is seconds of CPU: in a thread (the unit of work is not touched by
        # anything else meanwhile: this handler awaits it).
        inserts, updates = await asyncio.to_thread(
            _sort_rows,
            good,
            _Known(cluster_codes, category_codes, existing, owners),
            report,
            now,
            None if dry_run else uow,
        )
        if not dry_run:
            try:
                await repo.insert_products(conn, inserts)
                await repo.update_products(conn, updates, now)
            except IntegrityError:
                # Another import or create took one of these skus or barcodes after the
                # reads above (the database's unique constraints caught it).
                raise ApiError(
                    409,
                    "import_conflict",
                    "another import or change created a sku or barcode of this file "
                    "meanwhile; nothing of it was applied: run it again",
                ) from None
            await uow.commit()
    return report.finish()


@dataclass(frozen=True)
class _Known:
    """What the database holds that an import's rows are checked against."""

    cluster_codes: set[str]
    category_codes: set[str]
    existing: dict[str, Any]
    owners: dict[str, str]


def _sort_rows(
    good: list[tuple[int, ProductIn]],
    known: _Known,
    report: ImportReport,
    now: datetime,
    uow: UnitOfWork | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows to insert and to update, each bad one rejected on the report, each change's
    event published on `uow` (None: a dry run)."""
    cluster_codes, category_codes = known.cluster_codes, known.category_codes
    existing, owners = known.existing, known.owners
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for line, p in good:
        if p.cluster and p.cluster not in cluster_codes:
            report.reject([_err(line, "cluster", "unknown_cluster", f"no cluster {p.cluster!r}")])
            continue
        if p.category and p.category not in category_codes:
            report.reject(
                [_err(line, "category", "unknown_category", f"no category {p.category!r}")]
            )
            continue
        owner = owners.get(p.barcode) if p.barcode else None
        if owner is not None and owner != p.sku:
            report.reject(
                [
                    _err(
                        line,
                        "barcode",
                        "duplicate_barcode",
                        f"barcode {p.barcode} belongs to {owner!r}",
                    )
                ]
            )
            continue
        state = state_of(p)
        current = existing.get(p.sku)
        if current is None:
            inserts.append(
                {
                    "sku": p.sku,
                    **state,
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                    "retired_at": None,
                }
            )
            report.created += 1
            if uow is not None:
                uow.publish(created_event(p.sku, state), key=p.sku)
        elif {f: current[f] for f in STATE_FIELDS} == state:
            # Retired ones too: an export (retired products included) imports back
            # as all unchanged.
            report.unchanged += 1
        elif current["status"] == "retired":
            report.reject(
                [_err(line, "sku", "product_retired", f"{p.sku!r} is retired; not changed")]
            )
        else:
            updates.append({"sku": p.sku, **state})
            report.updated += 1
            if uow is not None:
                uow.publish(updated_event(p.sku, state), key=p.sku)
    return inserts, updates


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def export_products(
    uow: UnitOfWork, *, status: str | None, cluster: str | None, page: int = 1000
) -> AsyncIterator[str]:
    """The catalog as CSV in the import's columns, read in keyset pages by sku."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield buf.getvalue()
    after: str | None = None
    while True:
        # A short read transaction per page: an export never holds a lock for long.
        async with uow:
            rows = await repo.page_after(await repo.conn_of(uow), after, page, status, cluster)
        if not rows:
            return
        buf.seek(0)
        buf.truncate()
        for row in rows:
            writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
        yield buf.getvalue()
        after = rows[-1]["sku"]
