"""Events and commands of the stock service."""

from datetime import datetime

from pydantic import Field

from .registry import REGISTRY, Payload
from .topics import STOCK_COMMANDS, STOCK_EVENTS


class _OutletSku(Payload):
    outlet_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)


class _LegUnits(_OutletSku):
    leg_id: str = Field(max_length=64)
    quantity: int = Field(gt=0)


@REGISTRY.register("stock.outlet_registered", topic=STOCK_EVENTS)
class OutletRegistered(Payload):
    """An outlet joined the network, or its details changed."""

    outlet_id: str = Field(max_length=64)
    name: str = Field(max_length=200)
    community: str | None = None
    region: str | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    status: str = Field(default="active", pattern="^(active|at_risk|closed)$")


@REGISTRY.register("stock.level_changed", topic=STOCK_EVENTS)
class StockLevelChanged(_OutletSku):
    """An outlet's level of a sku changed; feeds other services' projections."""

    on_hand: int
    reserved: int = Field(ge=0)
    available: int
    reorder_point: int = Field(ge=0)
    # Optional, so events written before they existed still read: planners use them to
    # see who will run short within a horizon and the days of cover after a move.
    maximum: int | None = Field(default=None, ge=0)
    daily_rate: float | None = Field(default=None, ge=0)


@REGISTRY.register("stock.low", topic=STOCK_EVENTS)
class StockLow(_OutletSku):
    """Available stock fell to or below the reorder point (once per crossing)."""

    available: int
    reorder_point: int = Field(ge=0)
    auto_restock: bool | None = Field(
        default=None,
        description="The level's own auto-restock switch (ops' setting); null: not said, "
        "the transfer service's default applies",
    )


@REGISTRY.register("stock.out", topic=STOCK_EVENTS)
class StockOut(_OutletSku):
    """Available stock reached zero."""


@REGISTRY.register("stock.surplus", topic=STOCK_EVENTS)
class StockSurplus(_OutletSku):
    """Stock rose above the maximum or the days-of-cover limit."""

    available: int
    maximum: int = Field(ge=0)


@REGISTRY.register("stock.discrepancy", topic=STOCK_EVENTS)
class StockDiscrepancy(_OutletSku):
    """On hand went negative (sales are never refused); ops should count the shelf."""

    on_hand: int


@REGISTRY.register("stock.reserved", topic=STOCK_EVENTS)
class StockReserved(_LegUnits):
    """Units were reserved at a source outlet for a transfer leg."""

    expires_at: datetime | None = None


@REGISTRY.register("stock.reservation_rejected", topic=STOCK_EVENTS)
class ReservationRejected(_OutletSku):
    """A reservation was refused; reason says why."""

    leg_id: str
    quantity: int = Field(gt=0)
    available: int
    reason: str


@REGISTRY.register("stock.reservation_released", topic=STOCK_EVENTS)
class ReservationReleased(_OutletSku):
    """A reservation was released (cancelled, expired or compensated)."""

    leg_id: str
    quantity: int = Field(ge=0)
    reason: str


@REGISTRY.register("stock.dispatched", topic=STOCK_EVENTS)
class StockDispatched(_LegUnits):
    """Reserved units left the source outlet as a transfer-out movement."""


@REGISTRY.register("stock.received", topic=STOCK_EVENTS)
class StockReceived(_OutletSku):
    """Units arrived at the destination outlet as a transfer-in movement."""

    leg_id: str
    quantity: int = Field(ge=0)
    reason: str | None = None


@REGISTRY.register("stock.reserve", topic=STOCK_COMMANDS)
class ReserveStock(_LegUnits):
    """Command: reserve units at a source outlet for a transfer leg."""

    expires_in_s: int = Field(default=3600, gt=0)


@REGISTRY.register("stock.release", topic=STOCK_COMMANDS)
class ReleaseStock(_OutletSku):
    """Command: release a leg's reservation."""

    leg_id: str
    reason: str


@REGISTRY.register("stock.dispatch_rejected", topic=STOCK_EVENTS)
class DispatchRejected(_OutletSku):
    """A dispatch was refused (no active reservation for the leg); reason says why."""

    leg_id: str
    reason: str


@REGISTRY.register("stock.dispatch", topic=STOCK_COMMANDS)
class DispatchStock(_OutletSku):
    """Command: the leg's reserved units leave the source outlet (a transfer-out)."""

    leg_id: str


@REGISTRY.register("stock.receive", topic=STOCK_COMMANDS)
class ReceiveStock(_LegUnits):
    """Command: units of a leg arrived at the destination outlet (a transfer-in).

    quantity may be less than sent_quantity (lost, damaged); then reason is required.
    """

    quantity: int = Field(ge=0)
    sent_quantity: int | None = Field(default=None, gt=0)
    reason: str | None = Field(default=None, max_length=500)
