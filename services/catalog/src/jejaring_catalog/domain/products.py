"""Products: what a client may send, the rules beyond single fields, and the events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from jejaring_shared.contracts.catalog import ProductCreated, ProductUpdated
from jejaring_shared.fields import Text

Sku = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"),
    Field(min_length=1, max_length=64),
]
Code = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-z0-9][a-z0-9_\-]*$"),
    Field(min_length=1, max_length=40),
]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True), Field(min_length=1, max_length=200), Text
]
Barcode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{8,14}$")]
Unit = Annotated[
    str, StringConstraints(strip_whitespace=True), Field(min_length=1, max_length=20), Text
]

STATE_FIELDS = (
    "name",
    "barcode",
    "unit",
    "category",
    "cluster",
    "case_pack",
    "min_transfer_qty",
    "perishable",
    "shelf_life_days",
    "member_made",
    "pareto_class",
)
CSV_COLUMNS = ("sku", *STATE_FIELDS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductFields(_Strict):
    """Every attribute of a product that ops may set (not sku, status or timestamps)."""

    name: Name
    barcode: Barcode | None = None
    unit: Unit
    category: Code | None = None
    cluster: Code | None = None
    case_pack: int = Field(default=1, ge=1, le=100_000)
    min_transfer_qty: int = Field(default=1, ge=1, le=1_000_000)
    perishable: bool = False
    shelf_life_days: int | None = Field(default=None, ge=1, le=3650)
    member_made: bool = False
    pareto_class: Literal["A", "B", "C"] = "C"


class ProductIn(ProductFields):
    """POST /products and one CSV row."""

    sku: Sku


class ProductPatch(_Strict):
    """PATCH /products/{sku}: only the fields sent change; null clears an optional one."""

    name: Name | None = None
    barcode: Barcode | None = None
    unit: Unit | None = None
    category: Code | None = None
    cluster: Code | None = None
    case_pack: int | None = Field(default=None, ge=1, le=100_000)
    min_transfer_qty: int | None = Field(default=None, ge=1, le=1_000_000)
    perishable: bool | None = None
    shelf_life_days: int | None = Field(default=None, ge=1, le=3650)
    member_made: bool | None = None
    pareto_class: Literal["A", "B", "C"] | None = None


class ProductOut(ProductIn):
    status: Literal["active", "retired"]
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None = None


def rule_errors(fields: ProductFields) -> list[tuple[str, str, str]]:
    """Rules across fields, as (field, code, message)."""
    errors: list[tuple[str, str, str]] = []
    if fields.perishable and fields.shelf_life_days is None:
        errors.append(("shelf_life_days", "required", "a perishable product needs shelf_life_days"))
    if not fields.perishable and fields.shelf_life_days is not None:
        errors.append(
            ("shelf_life_days", "not_perishable", "shelf_life_days is only for perishable products")
        )
    return errors


def state_of(fields: ProductFields) -> dict[str, Any]:
    return {name: getattr(fields, name) for name in STATE_FIELDS}


def created_event(sku: str, state: dict[str, Any]) -> ProductCreated:
    return ProductCreated(sku=sku, **state)


def updated_event(sku: str, state: dict[str, Any]) -> ProductUpdated:
    return ProductUpdated(sku=sku, **state)
