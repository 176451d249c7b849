"""Events of the supplier service."""

from datetime import datetime

from pydantic import Field

from .registry import REGISTRY, Payload
from .topics import SUPPLIER_EVENTS


@REGISTRY.register("supplier.registered", topic=SUPPLIER_EVENTS)
class SupplierRegistered(Payload):
    """A community supplier joined."""

    supplier_id: str = Field(max_length=64)
    name: str = Field(max_length=200)
    kind: str = Field(pattern="^(small_producer|community_manager|distribution_center)$")
    community: str | None = Field(default=None, max_length=200)
    regions: list[str] = Field(default_factory=list)
    clusters: list[str] = Field(default_factory=list)


@REGISTRY.register("supplier.offer_published", topic=SUPPLIER_EVENTS)
class OfferPublished(Payload):
    """A supplier offered a quantity of a sku at a price."""

    offer_id: str = Field(max_length=64)
    supplier_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)
    quantity: int = Field(gt=0)
    unit_price: int = Field(ge=0, description="Integer rupiah")
    lead_time_hours: int = Field(ge=0)
    min_order: int = Field(default=1, ge=1)
    valid_until: datetime | None = None


@REGISTRY.register("supplier.offer_withdrawn", topic=SUPPLIER_EVENTS)
class OfferWithdrawn(Payload):
    """An offer is no longer available."""

    offer_id: str = Field(max_length=64)
    supplier_id: str = Field(max_length=64)


class _Assignment(Payload):
    leg_id: str = Field(max_length=64)
    supplier_id: str = Field(max_length=64)


@REGISTRY.register("supplier.assignment_accepted", topic=SUPPLIER_EVENTS)
class AssignmentAccepted(_Assignment):
    """The supplier will deliver the leg."""


@REGISTRY.register("supplier.assignment_declined", topic=SUPPLIER_EVENTS)
class AssignmentDeclined(_Assignment):
    """The supplier will not deliver the leg."""

    reason: str = Field(max_length=500)


@REGISTRY.register("supplier.assignment_shipped", topic=SUPPLIER_EVENTS)
class AssignmentShipped(_Assignment):
    """The supplier shipped the leg."""

    quantity: int = Field(gt=0)
    note: str | None = Field(default=None, max_length=500)
