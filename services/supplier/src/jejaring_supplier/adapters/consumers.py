"""Event handlers: the catalog projection and the assignment inbox.

Each runs inside the consumer runner's unit of work (which records the event in the
inbox and commits); handlers never commit.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from jejaring_shared.app import ConsumerSpec
from jejaring_shared.contracts import Envelope, utcnow
from jejaring_shared.contracts.catalog import ProductCreated, ProductRetired
from jejaring_shared.contracts.supplier import OfferWithdrawn
from jejaring_shared.contracts.topics import CATALOG_EVENTS, TRANSFER_EVENTS
from jejaring_shared.contracts.transfer import LegAssigned, LegCancelled, LegExpired
from jejaring_shared.db import UnitOfWork

from ..config import SupplierSettings
from . import repository as repo
from .tables import assignments, catalog_products, offers, webhook_deliveries

ASSIGNMENT_CREATED = "assignment.created"
ASSIGNMENT_CANCELLED = "assignment.cancelled"


async def on_product(uow: UnitOfWork, envelope: Envelope, payload: ProductCreated) -> None:
    """product_created and product_updated: the newest name and unit of the sku."""
    conn = await repo.conn_of(uow)
    current = await repo.product(conn, payload.sku)
    values = {"name": payload.name, "unit": payload.unit, "updated_at": envelope.occurred_at}
    if current is None:
        await conn.execute(
            sa.insert(catalog_products).values(sku=payload.sku, status="active", **values)
        )
    else:
        # A retired product stays retired: the catalog never revives one.
        await conn.execute(
            sa.update(catalog_products).where(catalog_products.c.sku == payload.sku).values(values)
        )


async def on_retired(uow: UnitOfWork, envelope: Envelope, payload: ProductRetired) -> None:
    """Mark the sku retired and withdraw the offers for it (their events say so)."""
    conn = await repo.conn_of(uow)
    if await repo.product(conn, payload.sku) is None:
        await conn.execute(
            sa.insert(catalog_products).values(
                sku=payload.sku,
                name=payload.sku,
                unit="",
                status="retired",
                updated_at=envelope.occurred_at,
            )
        )
    else:
        await conn.execute(
            sa.update(catalog_products)
            .where(catalog_products.c.sku == payload.sku)
            .values(status="retired", updated_at=envelope.occurred_at)
        )
    # One statement: an offer its supplier withdraws meanwhile is not announced twice.
    active = (
        (
            await conn.execute(
                sa.update(offers)
                .where(offers.c.sku == payload.sku, offers.c.status == "active")
                .values(status="withdrawn", withdrawn_at=envelope.occurred_at)
                .returning(offers.c.id, offers.c.supplier_id)
            )
        )
        .mappings()
        .all()
    )
    for o in active:
        uow.publish(
            OfferWithdrawn(offer_id=o["id"], supplier_id=o["supplier_id"]),
            key=o["supplier_id"],
            cause=envelope,
        )


def webhook_body(
    delivery_id: str,
    envelope: Envelope,
    kind: str,
    supplier_id: str,
    assignment: dict[str, Any],
    actions: tuple[str, ...],
) -> str:
    """Fixed when the delivery is created, so every retry sends the same bytes; `links`
    name the `actions` the supplier can take on the assignment."""
    base = f"/api/v1/suppliers/{supplier_id}/assignments/{assignment['leg_id']}"
    body: dict[str, Any] = {
        "id": delivery_id,
        "type": kind,
        "occurred_at": envelope.occurred_at.isoformat(),
        "supplier_id": supplier_id,
        "assignment": assignment,
        "links": {a: f"{base}/{a}" for a in actions},
    }
    return json.dumps(body, separators=(",", ":"))


async def _tell_supplier(
    conn: Any,
    envelope: Envelope,
    kind: str,
    supplier_id: str,
    assignment: dict[str, Any],
    actions: tuple[str, ...],
) -> None:
    """A webhook delivery (sent and retried by the webhook sender), if the supplier has a
    webhook."""
    supplier = await repo.supplier(conn, supplier_id)
    if supplier is None or not supplier["webhook_url"]:
        return
    delivery_id = str(uuid.uuid4())
    await conn.execute(
        sa.insert(webhook_deliveries).values(
            id=delivery_id,
            supplier_id=supplier_id,
            leg_id=assignment["leg_id"],
            event=kind,
            url=supplier["webhook_url"],
            body=webhook_body(delivery_id, envelope, kind, supplier_id, assignment, actions),
            status="pending",
            attempts=0,
            next_attempt_at=utcnow(),
            created_at=utcnow(),
        )
    )


async def on_leg_assigned(uow: UnitOfWork, envelope: Envelope, payload: LegAssigned) -> None:
    """A new assignment in the supplier's inbox, and a webhook to tell them of it."""
    conn = await repo.conn_of(uow)
    if await repo.assignment(conn, payload.leg_id) is not None:
        return  # the same leg sent again under another event id: already in the inbox
    now = envelope.occurred_at
    await conn.execute(
        sa.insert(assignments).values(
            leg_id=payload.leg_id,
            request_id=payload.request_id,
            supplier_id=payload.supplier_id,
            outlet_id=payload.outlet_id,
            sku=payload.sku,
            quantity=payload.quantity,
            unit_price=payload.unit_price,
            accept_by=payload.accept_by,
            ship_by=payload.ship_by,
            status="assigned",
            assigned_at=now,
        )
    )
    await _tell_supplier(
        conn,
        envelope,
        ASSIGNMENT_CREATED,
        payload.supplier_id,
        payload.model_dump(mode="json"),
        ("accept", "decline", "ship"),
    )


async def on_leg_called_off(
    uow: UnitOfWork, envelope: Envelope, payload: LegCancelled | LegExpired
) -> None:
    """Transfer called a supplier leg off (its request cancelled or expired, or the accept
    too late): an assignment not yet shipped is closed, so it can no longer be accepted
    or shipped, and the supplier is told. A shipped one stays shipped: those goods are on
    their way, and transfer takes them in."""
    if payload.source_kind != "supplier":
        return
    conn = await repo.conn_of(uow)
    current = await repo.assignment(conn, payload.leg_id, for_update=True)
    if current is None or current["status"] not in ("assigned", "accepted"):
        return
    reason = payload.reason or payload.state
    values = {"status": "cancelled", "cancelled_at": envelope.occurred_at, "cancel_reason": reason}
    await conn.execute(
        sa.update(assignments).where(assignments.c.leg_id == payload.leg_id).values(values)
    )
    await _tell_supplier(
        conn,
        envelope,
        ASSIGNMENT_CANCELLED,
        current["supplier_id"],
        {"leg_id": payload.leg_id, "request_id": payload.request_id, "reason": reason},
        (),
    )


def consumer_specs(settings: SupplierSettings) -> list[ConsumerSpec]:
    """The groups are settings (`catalog_group`, `transfer_group`) so tests and side-by-side
    deployments can run their own."""
    return [
        ConsumerSpec(
            settings.catalog_group,
            [CATALOG_EVENTS],
            {
                "catalog.product_created": on_product,
                "catalog.product_updated": on_product,
                "catalog.product_retired": on_retired,
            },
        ),
        ConsumerSpec(
            settings.transfer_group,
            [TRANSFER_EVENTS],
            {
                "transfer.leg_assigned": on_leg_assigned,
                "transfer.leg_cancelled": on_leg_called_off,
                "transfer.leg_expired": on_leg_called_off,
            },
        ),
    ]
