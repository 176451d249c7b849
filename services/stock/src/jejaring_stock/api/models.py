"""Request bodies of the stock API (strict: unknown fields are refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from jejaring_shared.fields import Text, Utc

from ..domain.model import MAX_LEVEL, SYSTEM_KEY_PREFIXES

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


def _client_key(value: str) -> str:
    if value.startswith(SYSTEM_KEY_PREFIXES):
        raise PydanticCustomError(
            "reserved_key",
            "idempotency keys beginning {prefixes} are stock's own",
            {"prefixes": " or ".join(SYSTEM_KEY_PREFIXES)},
        )
    return value


Key = Annotated[
    str, StringConstraints(min_length=1, max_length=200), Text, AfterValidator(_client_key)
]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500), Text]
Qty = Annotated[int, Field(gt=0, le=1_000_000)]
UtcTime = Annotated[AwareDatetime, Utc]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutletIn(Strict):
    id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=200), Text]
    community: Annotated[str, StringConstraints(max_length=200), Text] | None = None
    region: Annotated[str, StringConstraints(max_length=200), Text] | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    status: Literal["active", "at_risk", "closed"] = "active"


class OutletPatch(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200), Text] | None = None
    community: Annotated[str, StringConstraints(max_length=200), Text] | None = None
    region: Annotated[str, StringConstraints(max_length=200), Text] | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    status: Literal["active", "at_risk", "closed"] | None = None


# A typed dict, not a model: a batch has up to 1,000 lines, and validating them into dicts
# takes about half the time of building a model per line. (No docstring: it would become
# the line's description in the OpenAPI document.)
class SaleLine(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    idempotency_key: Key
    sku: Id
    quantity: Qty
    sold_at: UtcTime


class SalesBatch(Strict):
    lines: list[SaleLine] = Field(min_length=1, max_length=1000)


class ReceiptIn(Strict):
    idempotency_key: Key
    sku: Id
    quantity: Qty
    source: Literal["distribution_center", "supplier"]
    supplier_id: Id | None = None
    reference: Annotated[str, StringConstraints(max_length=100), Text] | None = None
    received_at: UtcTime | None = None


class AdjustmentIn(Strict):
    """A stock count: on hand becomes `counted`, the difference is the movement."""

    idempotency_key: Key
    sku: Id
    counted: int = Field(ge=0, le=MAX_LEVEL)
    reason: Reason
    counted_at: UtcTime | None = None


class WriteOffIn(Strict):
    idempotency_key: Key
    sku: Id
    quantity: Qty
    reason: Literal["damaged", "expired"]
    note: Annotated[str, StringConstraints(max_length=400), Text] | None = None
    occurred_at: UtcTime | None = None


class ReturnIn(Strict):
    """A customer return: the units come back on the shelf."""

    idempotency_key: Key
    sku: Id
    quantity: Qty
    reason: Reason
    occurred_at: UtcTime | None = None


class LevelSettings(Strict):
    """Ops' planning values; a reorder point or maximum set here is pinned, null unpins."""

    reorder_point: int | None = Field(default=None, ge=0, le=MAX_LEVEL)
    maximum: int | None = Field(default=None, ge=0, le=MAX_LEVEL)
    safety_stock: int | None = Field(default=None, ge=0, le=MAX_LEVEL)
    auto_restock: bool | None = None
    lead_time_days: float | None = Field(default=None, ge=0, le=365)


class ReservationIn(Strict):
    leg_id: Id
    sku: Id
    quantity: Qty
    expires_in_s: int = Field(default=3600, gt=0, le=30 * 86400)


class ReleaseIn(Strict):
    reason: Reason = "released"


class TransferInIn(Strict):
    leg_id: Id
    sku: Id
    quantity: int = Field(ge=0, le=1_000_000)
    sent_quantity: Qty | None = None
    reason: Reason | None = None
