"""Events of the transfer service."""

from datetime import datetime

from pydantic import Field

from .registry import REGISTRY, Payload
from .topics import TRANSFER_EVENTS


@REGISTRY.register("transfer.request_opened", topic=TRANSFER_EVENTS)
class RestockRequestOpened(Payload):
    """An outlet asked for restock (by API or from stock.low)."""

    request_id: str
    outlet_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)
    quantity: int = Field(gt=0)
    needed_by: datetime | None = None


@REGISTRY.register("transfer.leg_assigned", topic=TRANSFER_EVENTS)
class LegAssigned(Payload):
    """A leg of a restock request was given to a community supplier to accept."""

    leg_id: str = Field(max_length=64)
    request_id: str = Field(max_length=64)
    supplier_id: str = Field(max_length=64)
    outlet_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)
    quantity: int = Field(gt=0)
    unit_price: int = Field(ge=0, description="Integer rupiah")
    accept_by: datetime = Field(description="UTC; the supplier must accept before this")
    ship_by: datetime | None = Field(
        default=None, description="UTC; shipping later is late for the reliability score"
    )
