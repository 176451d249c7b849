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


# -- the transfer saga (transfer service issue) ----------------------------------------------


class CostTerms(Payload):
    """The cost of a candidate source in rupiah, term by term."""

    transport: float
    price: float
    lead_time: float
    risk: float
    total: float


class CandidateConsidered(Payload):
    """One source the matcher looked at, what it could give and what it would cost."""

    source_kind: str = Field(pattern="^(outlet|supplier)$")
    source_id: str = Field(max_length=64)
    offer_id: str | None = Field(default=None, max_length=64)
    can_give: int = Field(ge=0)
    quantity: int = Field(ge=0)
    distance_km: float | None = None
    lead_time_hours: float = 0.0
    unit_price: int = Field(default=0, ge=0)
    terms: CostTerms | None = None
    cost_per_unit: float | None = None
    excluded: str | None = Field(default=None, description="Why it was not usable, if not")
    chosen: bool = False


class MatchedLeg(Payload):
    leg_id: str = Field(max_length=64)
    source_kind: str = Field(pattern="^(outlet|supplier)$")
    source_id: str = Field(max_length=64)
    quantity: int = Field(gt=0)


@REGISTRY.register("transfer.request_merged", topic=TRANSFER_EVENTS)
class RestockRequestMerged(Payload):
    """A second request for the same outlet and sku was added to the open one."""

    request_id: str
    outlet_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)
    added_quantity: int = Field(gt=0)
    quantity: int = Field(gt=0, description="The request's quantity after the merge")


@REGISTRY.register("transfer.request_matched", topic=TRANSFER_EVENTS)
class RestockRequestMatched(Payload):
    """Sources were chosen for (part of) a request, with the explanation of the choice."""

    request_id: str
    outlet_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)
    need: int = Field(ge=0, description="Units that were still to be matched")
    strategy: str = Field(description="single_source, split or none")
    legs: list[MatchedLeg] = Field(default_factory=list)
    unfilled: int = Field(ge=0)
    candidates: list[CandidateConsidered] = Field(default_factory=list)
    attempt: int = Field(ge=1, description="1 for the first match, then each re-match")
    excluded_sources: list[str] = Field(
        default_factory=list, description="kind:id of sources that failed this request before"
    )


class _LegTransition(Payload):
    leg_id: str = Field(max_length=64)
    request_id: str
    source_kind: str = Field(pattern="^(outlet|supplier)$")
    source_id: str = Field(max_length=64)
    outlet_id: str = Field(max_length=64, description="The destination (requesting) outlet")
    sku: str = Field(max_length=64)
    quantity: int = Field(ge=0)
    state: str = Field(description="The leg's state after the transition")
    reason: str | None = Field(default=None, max_length=500)


@REGISTRY.register("transfer.leg_proposed", topic=TRANSFER_EVENTS)
class LegProposed(_LegTransition):
    """A peer outlet was asked to reserve units for a leg (stock.reserve sent)."""

    expires_at: datetime | None = Field(default=None, description="Reservation expiry, UTC")


@REGISTRY.register("transfer.leg_reserved", topic=TRANSFER_EVENTS)
class LegReserved(_LegTransition):
    """The source outlet reserved the leg's units."""


@REGISTRY.register("transfer.leg_rejected", topic=TRANSFER_EVENTS)
class LegRejected(_LegTransition):
    """The source outlet refused the reservation; the remainder is re-matched."""


@REGISTRY.register("transfer.leg_accepted", topic=TRANSFER_EVENTS)
class LegAccepted(_LegTransition):
    """The supplier accepted the leg."""


@REGISTRY.register("transfer.leg_declined", topic=TRANSFER_EVENTS)
class LegDeclined(_LegTransition):
    """The supplier declined the leg; the remainder is re-matched."""


@REGISTRY.register("transfer.leg_expired", topic=TRANSFER_EVENTS)
class LegExpired(_LegTransition):
    """The supplier did not accept before accept_by (state timed_out); re-matched."""


@REGISTRY.register("transfer.leg_dispatched", topic=TRANSFER_EVENTS)
class LegDispatched(_LegTransition):
    """The units left the source outlet."""


@REGISTRY.register("transfer.leg_shipped", topic=TRANSFER_EVENTS)
class LegShipped(_LegTransition):
    """The supplier shipped the leg."""


@REGISTRY.register("transfer.leg_received", topic=TRANSFER_EVENTS)
class LegReceived(_LegTransition):
    """The destination received the leg (quantity may be less, with a reason)."""

    sent_quantity: int | None = Field(default=None, ge=0)


@REGISTRY.register("transfer.leg_cancelled", topic=TRANSFER_EVENTS)
class LegCancelled(_LegTransition):
    """The leg was called off (request cancelled or expired, reservation released)."""


class _RequestClosed(Payload):
    request_id: str
    outlet_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)
    quantity: int = Field(gt=0)
    received: int = Field(ge=0)
    reason: str | None = Field(default=None, max_length=500)


@REGISTRY.register("transfer.request_fulfilled", topic=TRANSFER_EVENTS)
class RestockRequestFulfilled(_RequestClosed):
    """Everything requested was received."""


@REGISTRY.register("transfer.request_partially_fulfilled", topic=TRANSFER_EVENTS)
class RestockRequestPartiallyFulfilled(_RequestClosed):
    """Every leg is finished and less than requested was received."""


@REGISTRY.register("transfer.request_expired", topic=TRANSFER_EVENTS)
class RestockRequestExpired(_RequestClosed):
    """The request ran out of time; every reservation not dispatched is released."""


@REGISTRY.register("transfer.request_cancelled", topic=TRANSFER_EVENTS)
class RestockRequestCancelled(_RequestClosed):
    """The outlet cancelled the request; every reservation not dispatched is released."""


# -- rebalancing plans (transfer service, issue 7) -------------------------------------------


@REGISTRY.register("transfer.plan_proposed", topic=TRANSFER_EVENTS)
class PlanProposed(Payload):
    """A rebalancing plan was proposed from the projections, for ops to approve or reject."""

    plan_id: str = Field(max_length=64)
    horizon_days: int = Field(ge=1)
    skus: list[str] | None = Field(default=None, description="The skus asked for; null = all")
    lines: int = Field(ge=0)
    units: int = Field(ge=0)
    cost: int = Field(ge=0, description="Integer rupiah: the lines' transport, price, trips")
    stockouts_avoided: int = Field(ge=0)
    short: int = Field(ge=0, description="Units still short after the plan")


class _PlanLine(Payload):
    plan_id: str = Field(max_length=64)
    line_id: str = Field(max_length=64)
    sku: str = Field(max_length=64)
    source_kind: str = Field(pattern="^(outlet|supplier)$")
    source_id: str = Field(max_length=64)
    outlet_id: str = Field(max_length=64, description="The destination (short) outlet")
    quantity: int = Field(gt=0)
    cost: int = Field(ge=0, description="Integer rupiah")


@REGISTRY.register("transfer.plan_line_approved", topic=TRANSFER_EVENTS)
class PlanLineApproved(_PlanLine):
    """A plan line was approved: it opened a restock request with its source fixed."""

    request_id: str = Field(max_length=64)


@REGISTRY.register("transfer.plan_line_rejected", topic=TRANSFER_EVENTS)
class PlanLineRejected(_PlanLine):
    """A plan line was rejected; nothing moves for it."""
