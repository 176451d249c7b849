"""Supplier HTTP API. Everything a supplier owns is under /suppliers/{supplier_id}/...,
so the gateway can bind an API key to that path prefix."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.app import UoW, runtime_of
from jejaring_shared.contracts import utcnow
from jejaring_shared.contracts.supplier import (
    AssignmentAccepted,
    AssignmentDeclined,
    AssignmentShipped,
    OfferPublished,
    OfferWithdrawn,
    SupplierRegistered,
)
from jejaring_shared.errors import ApiError
from jejaring_shared.fields import in_utc

from ..adapters import repository as repo
from ..adapters.tables import (
    assignments,
    offers,
    suppliers,
    webhook_attempts,
    webhook_deliveries,
)
from ..domain import webhooks
from ..domain.assignments import Action, check_transition, reliability
from .models import (
    AssignmentOut,
    AttemptOut,
    ContactIn,
    DeclineIn,
    DeliveryOut,
    OfferIn,
    OfferOut,
    Page,
    ReliabilityOut,
    SettlementLine,
    SettlementOut,
    ShipIn,
    SupplierIn,
    SupplierOut,
)

router = APIRouter(prefix="/api/v1", tags=["supplier"])

SupplierId = Annotated[str, Path(max_length=64)]
LegId = Annotated[str, Path(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]


def _supplier_out(row: dict[str, Any]) -> SupplierOut:
    return SupplierOut(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        community=row["community"],
        regions=row["regions"],
        clusters=row["clusters"],
        contact=ContactIn(
            name=row["contact_name"], phone=row["contact_phone"], email=row["contact_email"]
        ),
        webhook_url=row["webhook_url"],
        webhook_secret_set=bool(row["webhook_secret"]),
        created_at=row["created_at"],
    )


async def _supplier(conn: AsyncConnection, supplier_id: str) -> dict[str, Any]:
    row = await repo.supplier(conn, supplier_id)
    if row is None:
        raise ApiError(404, "supplier_not_found", f"no supplier {supplier_id!r}", "supplier_id")
    return row


async def _page(
    conn: AsyncConnection, table: sa.Table, where: list[Any], order: Any, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    total = (
        await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))
    ).scalar_one()
    rows = await repo.many(
        conn, sa.select(table).where(*where).order_by(*order).limit(limit).offset(offset)
    )
    return rows, int(total)


# -- suppliers ----------------------------------------------------------------------------


@router.post("/suppliers", status_code=201)
async def register_supplier(body: SupplierIn, request: Request, uow: UoW) -> SupplierOut:
    """Register a community supplier (small producer, community manager or the DC)."""
    if body.webhook_url is not None and body.webhook_secret is None:
        raise ApiError(422, "required", "a webhook needs a secret to sign it", "webhook_secret")
    settings = runtime_of(request).settings
    if body.webhook_url is not None and not getattr(settings, "webhook_allow_private", False):
        reason = webhooks.host_refusal(body.webhook_url.host or "")
        if reason is not None:
            raise ApiError(
                422, "webhook_not_public", f"webhook URL refused: {reason}", "webhook_url"
            )
    supplier_id = f"sup_{uuid.uuid4().hex[:16]}"
    row = {
        "id": supplier_id,
        "name": body.name,
        "kind": body.kind,
        "community": body.community,
        "regions": sorted(set(body.regions)),
        "clusters": sorted(set(body.clusters)),
        "contact_name": body.contact.name,
        "contact_phone": body.contact.phone,
        "contact_email": body.contact.email,
        "webhook_url": str(body.webhook_url) if body.webhook_url else None,
        "webhook_secret": body.webhook_secret,
        "created_at": utcnow(),
    }
    async with uow:
        conn = await repo.conn_of(uow)
        await conn.execute(sa.insert(suppliers).values(row))
        uow.publish(
            SupplierRegistered(
                supplier_id=supplier_id,
                name=body.name,
                kind=body.kind,
                community=body.community,
                regions=row["regions"],
                clusters=row["clusters"],
            ),
            key=supplier_id,
        )
        await uow.commit()
    return _supplier_out(row)


@router.get("/suppliers")
async def list_suppliers(
    uow: UoW,
    kind: Literal["small_producer", "community_manager", "distribution_center"] | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[SupplierOut]:
    where = [suppliers.c.kind == kind] if kind else []
    async with uow:
        rows, total = await _page(
            await repo.conn_of(uow), suppliers, where, [suppliers.c.id], limit, offset
        )
    return Page[SupplierOut](
        items=[_supplier_out(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/suppliers/{supplier_id}")
async def get_supplier(supplier_id: SupplierId, uow: UoW) -> SupplierOut:
    async with uow:
        return _supplier_out(await _supplier(await repo.conn_of(uow), supplier_id))


# -- offers -------------------------------------------------------------------------------


@router.post("/suppliers/{supplier_id}/offers", status_code=201)
async def publish_offer(supplier_id: SupplierId, body: OfferIn, uow: UoW) -> OfferOut:
    """Offer a quantity of a sku at a price; the sku must be an active catalog product."""
    now = utcnow()
    if body.min_order > body.quantity:
        # No order could ever be placed: transfer would skip the offer, silently.
        raise ApiError(
            422,
            "too_large",
            f"min_order {body.min_order} is more than the quantity offered ({body.quantity})",
            "min_order",
        )
    valid_until = body.valid_until
    if valid_until is not None:
        if valid_until.tzinfo is None:
            raise ApiError(
                422, "timezone_required", "give valid_until with a UTC offset", "valid_until"
            )
        try:
            valid_until = in_utc(valid_until)
        except ValueError as exc:  # before year 1 or past 9999 once in UTC
            raise ApiError(422, "invalid", str(exc), "valid_until") from None
        if valid_until <= now:
            raise ApiError(422, "in_the_past", "valid_until is in the past", "valid_until")
    async with uow:
        conn = await repo.conn_of(uow)
        await _supplier(conn, supplier_id)
        # Read for share: a retirement applied meanwhile waits for this offer and then
        # withdraws it, or this offer waits and sees the sku retired. Unlocked, on
        # PostgreSQL the retirement could miss the offer, which stayed active for good.
        product = await repo.product(conn, body.sku, for_share=True)
        if product is None:
            raise ApiError(422, "unknown_sku", f"no product {body.sku!r} in the catalog", "sku")
        if product["status"] != "active":
            raise ApiError(422, "product_retired", f"{body.sku!r} is retired", "sku")
        row = {
            "id": f"off_{uuid.uuid4().hex[:16]}",
            "supplier_id": supplier_id,
            "sku": body.sku,
            "quantity": body.quantity,
            "unit_price": body.unit_price,
            "lead_time_hours": body.lead_time_hours,
            "min_order": body.min_order,
            "valid_until": valid_until,
            "status": "active",
            "created_at": now,
            "withdrawn_at": None,
        }
        await conn.execute(sa.insert(offers).values(row))
        uow.publish(
            OfferPublished(
                offer_id=row["id"],
                supplier_id=supplier_id,
                sku=body.sku,
                quantity=body.quantity,
                unit_price=body.unit_price,
                lead_time_hours=body.lead_time_hours,
                min_order=body.min_order,
                valid_until=valid_until,
            ),
            key=supplier_id,
        )
        await uow.commit()
    return OfferOut.of(row, utcnow())


@router.get("/suppliers/{supplier_id}/offers")
async def list_offers(
    supplier_id: SupplierId,
    uow: UoW,
    status: Literal["active", "expired", "withdrawn", "all"] = "active",
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[OfferOut]:
    now = utcnow()
    where: list[Any] = [offers.c.supplier_id == supplier_id]
    if status != "all":
        where.append(offers.c.status == ("withdrawn" if status == "withdrawn" else "active"))
    # Past valid_until an active offer is expired (transfer no longer matches it).
    if status == "active":
        where.append(sa.or_(offers.c.valid_until.is_(None), offers.c.valid_until > now))
    elif status == "expired":
        where.append(offers.c.valid_until <= now)
    async with uow:
        conn = await repo.conn_of(uow)
        await _supplier(conn, supplier_id)
        rows, total = await _page(
            conn, offers, where, [offers.c.created_at.desc(), offers.c.id], limit, offset
        )
    return Page[OfferOut](
        items=[OfferOut.of(r, now) for r in rows], total=total, limit=limit, offset=offset
    )


@router.post("/suppliers/{supplier_id}/offers/{offer_id}/withdraw")
async def withdraw_offer(
    supplier_id: SupplierId, offer_id: Annotated[str, Path(max_length=64)], uow: UoW
) -> OfferOut:
    """Withdraw an offer; withdrawing it again is a no-op (safe to retry)."""
    async with uow:
        conn = await repo.conn_of(uow)
        row = await repo.one(
            conn,
            sa.select(offers).where(offers.c.id == offer_id, offers.c.supplier_id == supplier_id),
        )
        if row is None:
            raise ApiError(404, "offer_not_found", f"no offer {offer_id!r}", "offer_id")
        if row["status"] == "withdrawn":
            return OfferOut.of(row, utcnow())
        now = utcnow()
        # Only an active offer changes: two withdrawals at once (or one racing a
        # retirement) both read it active, and each announced it withdrawn.
        changed = await conn.execute(
            sa.update(offers)
            .where(offers.c.id == offer_id, offers.c.status == "active")
            .values(status="withdrawn", withdrawn_at=now)
        )
        if changed.rowcount == 1:
            uow.publish(OfferWithdrawn(offer_id=offer_id, supplier_id=supplier_id), key=supplier_id)
            await uow.commit()
        else:
            row = await repo.one(conn, sa.select(offers).where(offers.c.id == offer_id)) or row
            return OfferOut.of(row, utcnow())
    return OfferOut.of({**row, "status": "withdrawn", "withdrawn_at": now}, now)


# -- assignments --------------------------------------------------------------------------


async def _assignment(
    conn: AsyncConnection, supplier_id: str, leg_id: str, *, for_update: bool = False
) -> dict[str, Any]:
    row = await repo.assignment(conn, leg_id, for_update=for_update)
    # Another supplier's leg is "not found": a supplier must not learn of others' work.
    if row is None or row["supplier_id"] != supplier_id:
        raise ApiError(404, "assignment_not_found", f"no assignment {leg_id!r}", "leg_id")
    return row


@router.get("/suppliers/{supplier_id}/assignments")
async def list_assignments(
    supplier_id: SupplierId,
    uow: UoW,
    status: Literal["assigned", "accepted", "declined", "shipped", "cancelled", "all"] = "all",
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[AssignmentOut]:
    """The supplier's inbox, newest first."""
    where: list[Any] = [assignments.c.supplier_id == supplier_id]
    if status != "all":
        where.append(assignments.c.status == status)
    async with uow:
        rows, total = await _page(
            await repo.conn_of(uow),
            assignments,
            where,
            [assignments.c.assigned_at.desc(), assignments.c.leg_id],
            limit,
            offset,
        )
    return Page[AssignmentOut](
        items=[AssignmentOut.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/suppliers/{supplier_id}/assignments/{leg_id}")
async def get_assignment(supplier_id: SupplierId, leg_id: LegId, uow: UoW) -> AssignmentOut:
    async with uow:
        return AssignmentOut.model_validate(
            await _assignment(await repo.conn_of(uow), supplier_id, leg_id)
        )


async def _act(
    uow: UoW, supplier_id: str, leg_id: str, action: Action, **args: Any
) -> AssignmentOut:
    async with uow:
        conn = await repo.conn_of(uow)
        row = await _assignment(conn, supplier_id, leg_id, for_update=True)
        now = utcnow()
        if not check_transition(action, row, now, **args):
            return AssignmentOut.model_validate(row)  # a retry: already done, no new event
        if action == "accept":
            values: dict[str, Any] = {"status": "accepted", "accepted_at": now}
            event: Any = AssignmentAccepted(leg_id=leg_id, supplier_id=supplier_id)
        elif action == "decline":
            values = {"status": "declined", "declined_at": now, "decline_reason": args["reason"]}
            event = AssignmentDeclined(
                leg_id=leg_id, supplier_id=supplier_id, reason=args["reason"]
            )
        else:
            values = {
                "status": "shipped",
                "shipped_at": now,
                "shipped_quantity": args["quantity"],
                "ship_note": args["note"],
            }
            event = AssignmentShipped(
                leg_id=leg_id, supplier_id=supplier_id, quantity=args["quantity"], note=args["note"]
            )
        await conn.execute(
            sa.update(assignments).where(assignments.c.leg_id == leg_id).values(values)
        )
        # Correlated with the restock request, so transfer and ops can follow the flow.
        uow.publish(event, key=supplier_id, correlation_id=row["request_id"])
        await uow.commit()
    return AssignmentOut.model_validate({**row, **values})


@router.post("/suppliers/{supplier_id}/assignments/{leg_id}/accept")
async def accept_assignment(supplier_id: SupplierId, leg_id: LegId, uow: UoW) -> AssignmentOut:
    """Accept a leg before its accept_by; accepting again is a no-op."""
    return await _act(uow, supplier_id, leg_id, "accept")


@router.post("/suppliers/{supplier_id}/assignments/{leg_id}/decline")
async def decline_assignment(
    supplier_id: SupplierId, leg_id: LegId, body: DeclineIn, uow: UoW
) -> AssignmentOut:
    """Decline a leg not yet accepted, with a reason; declining again is a no-op."""
    return await _act(uow, supplier_id, leg_id, "decline", reason=body.reason)


@router.post("/suppliers/{supplier_id}/assignments/{leg_id}/ship")
async def ship_assignment(
    supplier_id: SupplierId, leg_id: LegId, body: ShipIn, uow: UoW
) -> AssignmentOut:
    """Confirm shipment of an accepted leg (at most the assigned quantity)."""
    return await _act(uow, supplier_id, leg_id, "ship", quantity=body.quantity, note=body.note)


# -- reliability, settlements, webhook log ------------------------------------------------


@router.get("/suppliers/{supplier_id}/reliability")
async def get_reliability(supplier_id: SupplierId, uow: UoW) -> ReliabilityOut:
    """Accepted and shipped on time, over the assignments whose outcome is known."""
    async with uow:
        conn = await repo.conn_of(uow)
        await _supplier(conn, supplier_id)
        rows = await repo.many(
            conn,
            sa.select(
                assignments.c.status,
                assignments.c.accept_by,
                assignments.c.ship_by,
                assignments.c.accepted_at,
                assignments.c.shipped_at,
                assignments.c.cancelled_at,
            ).where(assignments.c.supplier_id == supplier_id),
        )
    r = reliability(rows, utcnow())
    return ReliabilityOut(
        supplier_id=supplier_id,
        assigned=r.assigned,
        accepted=r.accepted,
        declined=r.declined,
        shipped=r.shipped,
        shipped_on_time=r.on_time,
        open=r.open,
        score=r.score,
    )


def _month(period: str) -> tuple[datetime, datetime]:
    year, month = (int(p) for p in period.split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@router.get("/suppliers/{supplier_id}/settlements/{period}")
async def get_settlement(
    supplier_id: SupplierId,
    period: Annotated[
        str,
        # Years 1970-2999: a month outside them cannot hold a settlement (and year 0 or
        # 9999-12 cannot even be turned into dates).
        Path(pattern=r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$", description="YYYY-MM"),
    ],
    uow: UoW,
) -> SettlementOut:
    """What the supplier shipped in a calendar month (UTC) and what it earned."""
    start, end = _month(period)
    async with uow:
        conn = await repo.conn_of(uow)
        await _supplier(conn, supplier_id)
        rows = await repo.many(
            conn,
            sa.select(assignments)
            .where(
                assignments.c.supplier_id == supplier_id,
                assignments.c.status == "shipped",
                assignments.c.shipped_at >= start,
                assignments.c.shipped_at < end,
            )
            .order_by(assignments.c.shipped_at, assignments.c.leg_id),
        )
    lines = [
        SettlementLine(
            leg_id=r["leg_id"],
            request_id=r["request_id"],
            outlet_id=r["outlet_id"],
            sku=r["sku"],
            quantity=r["shipped_quantity"],
            unit_price=r["unit_price"],
            amount=r["shipped_quantity"] * r["unit_price"],
            shipped_at=r["shipped_at"],
        )
        for r in rows
    ]
    return SettlementOut(
        supplier_id=supplier_id,
        period=period,
        period_start=start,
        period_end=end,
        legs=len(lines),
        quantity=sum(line.quantity for line in lines),
        amount=sum(line.amount for line in lines),
        lines=lines,
    )


LOG_ATTEMPTS = 10
"""Attempts shown per delivery in its log: the latest ones."""


@router.get("/suppliers/{supplier_id}/webhook-deliveries")
async def list_deliveries(
    supplier_id: SupplierId, uow: UoW, limit: Limit = 50, offset: Offset = 0
) -> Page[DeliveryOut]:
    """The webhook delivery log: each delivery with its last `LOG_ATTEMPTS` attempts
    (`attempts` counts them all: a delivery is tried for about a day)."""
    async with uow:
        conn = await repo.conn_of(uow)
        await _supplier(conn, supplier_id)
        rows, total = await _page(
            conn,
            webhook_deliveries,
            [webhook_deliveries.c.supplier_id == supplier_id],
            [webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id],
            limit,
            offset,
        )
        attempts = await repo.many(
            conn,
            sa.select(webhook_attempts)
            .join(webhook_deliveries, webhook_deliveries.c.id == webhook_attempts.c.delivery_id)
            .where(
                webhook_attempts.c.delivery_id.in_([r["id"] for r in rows]),
                webhook_attempts.c.attempt > webhook_deliveries.c.attempts - LOG_ATTEMPTS,
            )
            .order_by(webhook_attempts.c.attempt),
        )
    log: dict[str, list[AttemptOut]] = {}
    for a in attempts:
        log.setdefault(a["delivery_id"], []).append(AttemptOut.model_validate(a))
    items = [
        DeliveryOut.model_validate(
            {**{k: v for k, v in r.items() if k != "body"}, "log": log.get(r["id"], [])}
        )
        for r in rows
    ]
    return Page[DeliveryOut](items=items, total=total, limit=limit, offset=offset)


@router.post("/suppliers/{supplier_id}/webhook-deliveries/{delivery_id}/resend")
async def resend_delivery(
    supplier_id: SupplierId, delivery_id: Annotated[str, Path(max_length=64)], uow: UoW
) -> DeliveryOut:
    """Try a failed delivery once more, now (after a receiver was down past the day of
    retries): the same id, body and signing secret. Only a failed one (409
    `delivery_not_failed`), and only its assignment's latest delivery (409
    `delivery_superseded`): an `assignment.created` sent after its `assignment.cancelled`
    would read as a live assignment."""
    async with uow:
        conn = await repo.conn_of(uow)
        await _supplier(conn, supplier_id)
        row = await repo.one(
            conn,
            sa.select(webhook_deliveries)
            .where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.supplier_id == supplier_id,
            )
            .with_for_update(),
        )
        if row is None:
            raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id!r}", "delivery_id")
        if row["status"] != "failed":
            raise ApiError(
                409, "delivery_not_failed", f"the delivery is {row['status']}", "delivery_id"
            )
        if row["leg_id"] is None:
            # Written before deliveries named their assignment (migration 0004): whether
            # later news of it went out cannot be told, so it is not sent out of order.
            raise ApiError(
                409,
                "delivery_superseded",
                "this delivery predates the order check; its assignment's state is in "
                "the assignments list",
                "delivery_id",
            )
        later = await repo.one(
            conn,
            sa.select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.leg_id == row["leg_id"],
                webhook_deliveries.c.created_at > row["created_at"],
            ),
        )
        if later is not None:
            raise ApiError(
                409,
                "delivery_superseded",
                f"delivery {later['id']} told this assignment's later news",
                "delivery_id",
            )
        values = {"status": "pending", "next_attempt_at": utcnow()}
        await conn.execute(
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id)
            .values(values)
        )
        await uow.commit()
    return DeliveryOut.model_validate(
        {**{k: v for k, v in row.items() if k not in ("body", "leg_id")}, **values, "log": []}
    )
