"""Catalog HTTP API: products, categories and business clusters (kept by ops)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.app import UoW, runtime_of
from jejaring_shared.contracts import utcnow
from jejaring_shared.contracts.catalog import ProductRetired
from jejaring_shared.csv_import import ImportReport, decode_csv
from jejaring_shared.errors import _PYDANTIC_CODES, ApiError

from ..adapters import repository as repo
from ..adapters.tables import categories, clusters
from ..config import CatalogSettings
from ..domain.products import (
    STATE_FIELDS,
    Code,
    Name,
    ProductFields,
    ProductIn,
    ProductOut,
    ProductPatch,
    created_event,
    rule_errors,
    state_of,
    updated_event,
)
from .importer import export_products, import_products

router = APIRouter(prefix="/api/v1", tags=["catalog"])


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code
    name: Name


class CodeOut(CodeIn):
    created_at: datetime


class ProductPage(BaseModel):
    items: list[ProductOut]
    total: int
    limit: int
    offset: int


def _utc(value: Any) -> Any:
    # SQLite hands back naive datetimes; they were written as UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _out(row: dict[str, Any]) -> ProductOut:
    return ProductOut.model_validate({k: _utc(v) for k, v in row.items()})


def _settings(request: Request) -> CatalogSettings:
    settings = runtime_of(request).settings
    return settings if isinstance(settings, CatalogSettings) else CatalogSettings()


# -- clusters and categories --------------------------------------------------------------


async def _add_code(uow: UoW, table: sa.Table, body: CodeIn, what: str) -> CodeOut:
    async with uow:
        conn = await repo.conn_of(uow)
        if body.code in await repo.codes(conn, table):
            raise ApiError(409, f"duplicate_{what}", f"{what} {body.code!r} exists", "code")
        # A concurrent add of the same code passes the check above too; the database then
        # refuses the insert itself (not the commit): a 409, not a 503.
        try:
            await repo.insert_code(conn, table, body.code, body.name)
            await uow.commit()
        except IntegrityError:
            raise ApiError(
                409, f"duplicate_{what}", f"{what} {body.code!r} exists", "code"
            ) from None
    return CodeOut(code=body.code, name=body.name, created_at=utcnow())


@router.post("/clusters", status_code=201)
async def create_cluster(body: CodeIn, uow: UoW) -> CodeOut:
    """Add a business cluster (food, beverages, printing_graphics, crafts, ...)."""
    return await _add_code(uow, clusters, body, "cluster")


@router.get("/clusters")
async def list_clusters(uow: UoW) -> list[CodeOut]:
    async with uow:
        rows = await repo.list_codes(await repo.conn_of(uow), clusters)
    return [CodeOut.model_validate({k: _utc(v) for k, v in r.items()}) for r in rows]


@router.post("/categories", status_code=201)
async def create_category(body: CodeIn, uow: UoW) -> CodeOut:
    return await _add_code(uow, categories, body, "category")


@router.get("/categories")
async def list_categories(uow: UoW) -> list[CodeOut]:
    async with uow:
        rows = await repo.list_codes(await repo.conn_of(uow), categories)
    return [CodeOut.model_validate({k: _utc(v) for k, v in r.items()}) for r in rows]


# -- products -----------------------------------------------------------------------------


def _check_rules(fields: ProductFields) -> None:
    for field, code, message in rule_errors(fields):
        raise ApiError(422, code, message, field)


async def _check_refs(conn: AsyncConnection, fields: ProductFields, sku: str) -> None:
    if fields.cluster and fields.cluster not in await repo.codes(conn, clusters):
        raise ApiError(422, "unknown_cluster", f"no cluster {fields.cluster!r}", "cluster")
    if fields.category and fields.category not in await repo.codes(conn, categories):
        raise ApiError(422, "unknown_category", f"no category {fields.category!r}", "category")
    if fields.barcode:
        owner = (await repo.barcode_owners(conn, [fields.barcode])).get(fields.barcode)
        if owner is not None and owner != sku:
            raise ApiError(409, "duplicate_barcode", f"barcode belongs to {owner!r}", "barcode")


async def _existing(conn: AsyncConnection, sku: str, *, lock: bool = False) -> dict[str, Any]:
    current = await repo.get_product(conn, sku, lock=lock)
    if current is None:
        raise ApiError(404, "product_not_found", f"no product {sku!r}", "sku")
    return current


@router.post("/products", status_code=201)
async def create_product(body: ProductIn, uow: UoW) -> ProductOut:
    _check_rules(body)
    async with uow:
        conn = await repo.conn_of(uow)
        if await repo.get_product(conn, body.sku) is not None:
            raise ApiError(409, "duplicate_sku", f"sku {body.sku!r} exists", "sku")
        await _check_refs(conn, body, body.sku)
        now = utcnow()
        state = state_of(body)
        row = {
            "sku": body.sku,
            **state,
            "status": "active",
            "created_at": now,
            "updated_at": now,
            "retired_at": None,
        }
        try:
            await repo.insert_products(conn, [row])
            uow.publish(created_event(body.sku, state), key=body.sku)
            await uow.commit()
        except IntegrityError as exc:
            # A concurrent create of the same sku or barcode won (past the checks above).
            # The barcode's unique constraint by name (PostgreSQL) or column (SQLite): the
            # message also quotes the values, and a sku may contain "barcode".
            refused = str(exc.orig)
            if "products_barcode_key" in refused or "products.barcode" in refused:
                raise ApiError(
                    409, "duplicate_barcode", "the barcode is taken", "barcode"
                ) from None
            raise ApiError(409, "duplicate_sku", f"sku {body.sku!r} exists", "sku") from None
    return _out(row)


@router.get("/products")
async def list_products(
    uow: UoW,
    q: Annotated[str | None, Query(max_length=200, description="part of name or sku")] = None,
    barcode: Annotated[str | None, Query(max_length=14)] = None,
    cluster: Annotated[str | None, Query(max_length=40)] = None,
    category: Annotated[str | None, Query(max_length=40)] = None,
    status: Literal["active", "retired", "all"] = "active",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> ProductPage:
    async with uow:
        rows, total = await repo.search_products(
            await repo.conn_of(uow),
            q=q,
            barcode=barcode,
            cluster=cluster,
            category=category,
            status=None if status == "all" else status,
            limit=limit,
            offset=offset,
        )
    return ProductPage(items=[_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.post(
    "/products:import",
    openapi_extra={
        "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}
    },
)
async def import_csv(request: Request, uow: UoW, dry_run: bool = False) -> ImportReport:
    """Import products from CSV (header: sku,name,unit and any other product column).

    Every bad row is reported with its line and reason; good rows are created or updated;
    a row equal to the stored product changes nothing. `dry_run` only validates.
    """
    settings = _settings(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.import_max_bytes:
        raise ApiError(413, "payload_too_large", "the file is too large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > settings.import_max_bytes:
            raise ApiError(413, "payload_too_large", "the file is too large")
    text = decode_csv(bytes(body), max_bytes=settings.import_max_bytes)
    return await import_products(uow, text, max_rows=settings.import_max_rows, dry_run=dry_run)


@router.get("/products:export", response_class=StreamingResponse)
async def export_csv(
    uow: UoW,
    status: Literal["active", "retired", "all"] = "all",
    cluster: Annotated[str | None, Query(max_length=40)] = None,
) -> StreamingResponse:
    """All products as CSV, in the columns the import reads."""
    return StreamingResponse(
        export_products(uow, status=None if status == "all" else status, cluster=cluster),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="products.csv"'},
    )


@router.get("/products/{sku}")
async def get_product(sku: str, uow: UoW) -> ProductOut:
    async with uow:
        return _out(await _existing(await repo.conn_of(uow), sku))


@router.patch("/products/{sku}")
async def update_product(sku: str, body: ProductPatch, uow: UoW) -> ProductOut:
    async with uow:
        conn = await repo.conn_of(uow)
        # Locked: a retirement racing this change waits for it, or this sees it.
        current = await _existing(conn, sku, lock=True)
        if current["status"] == "retired":
            raise ApiError(409, "product_retired", f"{sku!r} is retired", "sku")
        merged = {f: current[f] for f in STATE_FIELDS}
        merged.update({f: getattr(body, f) for f in body.model_fields_set})
        try:
            fields = ProductFields.model_validate(merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ApiError(
                422,
                _PYDANTIC_CODES.get(str(err["type"]), "invalid"),
                str(err["msg"]),
                ".".join(str(p) for p in err["loc"]) or None,
            ) from None
        _check_rules(fields)
        await _check_refs(conn, fields, sku)
        state = state_of(fields)
        if state == {f: current[f] for f in STATE_FIELDS}:
            return _out(current)  # nothing changed: no event
        now = utcnow()
        try:
            await repo.update_products(conn, [{"sku": sku, **state}], now)
            uow.publish(updated_event(sku, state), key=sku)
            await uow.commit()
        except IntegrityError:
            raise ApiError(409, "duplicate_barcode", "the barcode is taken", "barcode") from None
    return _out({**current, **state, "updated_at": now})


@router.post("/products/{sku}/retire")
async def retire_product(sku: str, uow: UoW) -> ProductOut:
    """Retire a product; retiring a retired product is a no-op (safe to retry)."""
    async with uow:
        conn = await repo.conn_of(uow)
        current = await _existing(conn, sku, lock=True)
        if current["status"] == "retired":
            return _out(current)
        now = utcnow()
        await repo.retire_product(conn, sku, now)
        uow.publish(ProductRetired(sku=sku), key=sku)
        await uow.commit()
    return _out({**current, "status": "retired", "retired_at": now, "updated_at": now})
