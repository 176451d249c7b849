"""Request and response models. Requests refuse unknown fields and never carry ids,
statuses or the supplier (that is in the path)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from jejaring_shared.fields import Text

Text200 = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Text
]
Code = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-z0-9][a-z0-9_\-]*$"),
    Field(min_length=1, max_length=40),
]
Sku = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), Text]
T = TypeVar("T")
Kind = Literal["small_producer", "community_manager", "distribution_center"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactIn(_In):
    name: Text200 | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()\-]{6,30}$")] | None = None
    # [^@\s] lets a NUL through, which PostgreSQL cannot store: Text refuses it.
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), Text] | None = (
        Field(default=None, max_length=200)
    )


class SupplierIn(_In):
    name: Text200
    kind: Kind
    community: Text200 | None = None
    regions: list[Code] = Field(default_factory=list, max_length=50)
    clusters: list[Code] = Field(default_factory=list, max_length=50)
    contact: ContactIn = Field(default_factory=ContactIn)
    webhook_url: AnyHttpUrl | None = Field(default=None, max_length=500)
    webhook_secret: Annotated[str, Text] | None = Field(default=None, min_length=16, max_length=200)


class SupplierOut(BaseModel):
    id: str
    name: str
    kind: Kind
    community: str | None
    regions: list[str]
    clusters: list[str]
    contact: ContactIn
    webhook_url: str | None
    webhook_secret_set: bool
    created_at: datetime


class OfferIn(_In):
    sku: Sku
    quantity: int = Field(gt=0, le=1_000_000_000)
    unit_price: int = Field(ge=0, le=10**12, description="Integer rupiah")
    lead_time_hours: int = Field(ge=0, le=24 * 365)
    min_order: int = Field(default=1, ge=1, le=1_000_000_000)
    valid_until: datetime | None = Field(default=None, description="UTC; must be in the future")


class OfferOut(BaseModel):
    id: str
    supplier_id: str
    sku: str
    quantity: int
    unit_price: int
    lead_time_hours: int
    min_order: int
    valid_until: datetime | None
    status: Literal["active", "expired", "withdrawn"] = Field(
        description="expired: active but past valid_until (transfer no longer matches it)"
    )
    created_at: datetime
    withdrawn_at: datetime | None

    @classmethod
    def of(cls, row: Mapping[str, Any], now: datetime) -> OfferOut:
        """The stored row as shown at `now`: an active offer past its valid_until is
        expired, as transfer sees it."""
        until = row["valid_until"]
        if row["status"] == "active" and until is not None and until <= now:
            row = {**row, "status": "expired"}
        return cls.model_validate(row)


class DeclineIn(_In):
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), Text
    ]


class ShipIn(_In):
    quantity: int = Field(gt=0, le=1_000_000_000)
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), Text] | None = (
        None
    )


class AssignmentOut(BaseModel):
    leg_id: str
    request_id: str
    supplier_id: str
    outlet_id: str
    sku: str
    quantity: int
    unit_price: int
    accept_by: datetime
    ship_by: datetime | None
    status: Literal["assigned", "accepted", "declined", "shipped", "cancelled"]
    decline_reason: str | None
    shipped_quantity: int | None
    ship_note: str | None
    assigned_at: datetime
    accepted_at: datetime | None
    declined_at: datetime | None
    shipped_at: datetime | None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class ReliabilityOut(BaseModel):
    supplier_id: str
    assigned: int
    accepted: int
    declined: int
    shipped: int
    shipped_on_time: int
    open: int
    score: float | None = Field(description="on time / assignments with an outcome; null if none")


class SettlementLine(BaseModel):
    leg_id: str
    request_id: str
    outlet_id: str
    sku: str
    quantity: int
    unit_price: int
    amount: int
    shipped_at: datetime


class SettlementOut(BaseModel):
    supplier_id: str
    period: str
    period_start: datetime
    period_end: datetime
    legs: int
    quantity: int
    amount: int = Field(description="Integer rupiah")
    lines: list[SettlementLine]


class AttemptOut(BaseModel):
    attempt: int
    attempted_at: datetime
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str
    event: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[AttemptOut]
