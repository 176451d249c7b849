"""Event handlers: projections from stock, supplier and catalog events, and the saga steps
those events drive. Each runs in the consumer runner's unit of work (inbox included) and
never commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from jejaring_shared.app import ConsumerSpec
from jejaring_shared.consumer import Handler
from jejaring_shared.contracts import Envelope, utcnow
from jejaring_shared.contracts.catalog import ProductCreated, ProductRetired
from jejaring_shared.contracts.stock import (
    DispatchRejected,
    OutletRegistered,
    ReservationRejected,
    ReservationReleased,
    StockDispatched,
    StockLevelChanged,
    StockLow,
    StockReceived,
    StockReserved,
    StockSurplus,
)
from jejaring_shared.contracts.supplier import (
    AssignmentAccepted,
    AssignmentDeclined,
    AssignmentShipped,
    OfferPublished,
    OfferWithdrawn,
    SupplierRegistered,
)
from jejaring_shared.contracts.topics import CATALOG_EVENTS, STOCK_EVENTS, SUPPLIER_EVENTS
from jejaring_shared.db import UnitOfWork
from jejaring_shared.errors import ApiError

from .. import saga
from ..adapters.tables import (
    offers_view,
    outlets_view,
    products_view,
    restock_requests,
    stock_view,
    suppliers_view,
)
from ..config import TransferSettings

_UPSERTS: dict[tuple[sa.Table, tuple[str, ...]], tuple[sa.Update, sa.Insert]] = {}
"""(table, key columns) -> its update and insert, built once with bound parameters (a
projection applies one per event; building them was a good part of its CPU)."""


async def _upsert(conn: Any, table: sa.Table, keys: dict[str, Any], values: dict[str, Any]) -> None:
    stmts = _UPSERTS.get((table, tuple(keys)))
    if stmts is None:
        where = [table.c[k] == sa.bindparam(f"b_{k}") for k in keys]
        stmts = _UPSERTS[(table, tuple(keys))] = (
            sa.update(table).where(*where),
            sa.insert(table),
        )
    update, insert = stmts
    done = await conn.execute(update, saga.set_params(table, values, **keys))
    if done.rowcount == 0:
        await conn.execute(insert, {**keys, **values})


def consumer_specs(settings: TransferSettings) -> list[ConsumerSpec]:
    def step(
        fn: Callable[[saga.Ctx, Any], Awaitable[None]],
    ) -> Handler:
        async def handle(uow: UnitOfWork, envelope: Envelope, payload: Any) -> None:
            await fn(saga.Ctx(uow, settings, utcnow(), cause=envelope), payload)

        return handle

    # -- stock.events ---------------------------------------------------------------------

    async def outlet_registered(ctx: saga.Ctx, p: OutletRegistered) -> None:
        await _upsert(
            await ctx.conn(),
            outlets_view,
            {"outlet_id": p.outlet_id},
            {
                "name": p.name,
                "community": p.community,
                "region": p.region,
                "lat": p.lat,
                "lon": p.lon,
                "status": p.status,
                "updated_at": ctx.now,
            },
        )

    async def level_changed(ctx: saga.Ctx, p: StockLevelChanged) -> None:
        await _upsert(
            await ctx.conn(),
            stock_view,
            {"outlet_id": p.outlet_id, "sku": p.sku},
            {
                "on_hand": p.on_hand,
                "reserved": p.reserved,
                "available": p.available,
                "reorder_point": p.reorder_point,
                # Older events carry neither: keep what is known rather than forget it.
                **({"maximum": p.maximum} if p.maximum is not None else {}),
                **({"daily_rate": p.daily_rate} if p.daily_rate is not None else {}),
                "updated_at": ctx.now,
            },
        )

    async def surplus(ctx: saga.Ctx, p: StockSurplus) -> None:
        # Only the maximum of a level already projected. Stock writes stock.surplus just
        # before the level_changed of the same change, which carries the maximum too; on a
        # level's first receipt that event creates the row, with the reorder point. A row
        # made here would have to guess the reorder point, and a match between the two
        # events (a consumer batch may end there) could take the donor below it.
        await (await ctx.conn()).execute(
            sa.update(stock_view)
            .where(stock_view.c.outlet_id == p.outlet_id, stock_view.c.sku == p.sku)
            .values(maximum=p.maximum)
        )

    async def low(ctx: saga.Ctx, p: StockLow) -> None:
        """Auto-restock: open a request up to the outlet's maximum (or twice its reorder
        point), unless one is open already or auto-restock is off: for the whole network
        (the service's setting) or for this level (its own switch, which the event
        carries)."""
        if not settings.auto_restock or p.auto_restock is False:
            return
        conn = await ctx.conn()
        outlet = await saga.one(
            conn, sa.select(outlets_view).where(outlets_view.c.outlet_id == p.outlet_id)
        )
        if outlet is not None and outlet["status"] == "closed":
            return
        # One past its expiry is not open for this (open_request expires it and opens a
        # new one): stock.low comes once per crossing, so skipping it lost the restock.
        open_now = await saga.one(
            conn,
            sa.select(restock_requests.c.id).where(
                restock_requests.c.open_key == saga.open_key_of(p.outlet_id, p.sku),
                restock_requests.c.expires_at > ctx.now,
            ),
        )
        if open_now is not None:
            return
        level = await saga.one(
            conn,
            sa.select(stock_view).where(
                stock_view.c.outlet_id == p.outlet_id, stock_view.c.sku == p.sku
            ),
        )
        maximum = (level or {}).get("maximum") or 0
        target = max(maximum, 2 * p.reorder_point, p.reorder_point + 1)
        quantity = target - p.available
        if quantity <= 0:
            return
        try:
            await saga.open_request(
                ctx,
                outlet_id=p.outlet_id,
                sku=p.sku,
                quantity=quantity,
                needed_by=None,
                origin="auto",
            )
        except ApiError:
            return  # a retired product: nothing to restock

    async def reserved(ctx: saga.Ctx, p: StockReserved) -> None:
        await saga.on_reserved(ctx, p.leg_id)

    async def rejected(ctx: saga.Ctx, p: ReservationRejected) -> None:
        await saga.leg_failed(
            ctx, p.leg_id, "rejected", allowed_from=("proposed",), reason=p.reason
        )

    async def released(ctx: saga.Ctx, p: ReservationReleased) -> None:
        await saga.on_released(ctx, p.leg_id, p.reason)

    async def dispatched(ctx: saga.Ctx, p: StockDispatched) -> None:
        await saga.on_dispatched(ctx, p.leg_id, p.quantity)

    async def dispatch_rejected(ctx: saga.Ctx, p: DispatchRejected) -> None:
        leg = await saga.get_leg(await ctx.conn(), p.leg_id)
        if leg is not None:
            await ctx.history(
                leg["request_id"],
                leg["state"],
                leg_id=p.leg_id,
                from_state=leg["state"],
                reason=f"dispatch refused: {p.reason}",
            )

    async def received(ctx: saga.Ctx, p: StockReceived) -> None:
        await saga.on_received(ctx, p.leg_id, p.quantity, p.reason)

    # -- supplier.events ------------------------------------------------------------------

    async def supplier_registered(ctx: saga.Ctx, p: SupplierRegistered) -> None:
        conn = await ctx.conn()
        done = await conn.execute(
            sa.update(suppliers_view)
            .where(suppliers_view.c.supplier_id == p.supplier_id)
            .values(community=p.community, updated_at=ctx.now)
        )
        if done.rowcount == 0:
            await conn.execute(
                sa.insert(suppliers_view).values(
                    supplier_id=p.supplier_id,
                    community=p.community,
                    assigned=0,
                    accepted=0,
                    declined=0,
                    timed_out=0,
                    shipped=0,
                    updated_at=ctx.now,
                )
            )

    async def offer_published(ctx: saga.Ctx, p: OfferPublished) -> None:
        await _upsert(
            await ctx.conn(),
            offers_view,
            {"offer_id": p.offer_id},
            {
                "supplier_id": p.supplier_id,
                "sku": p.sku,
                "quantity": p.quantity,
                "unit_price": p.unit_price,
                "lead_time_hours": p.lead_time_hours,
                "min_order": p.min_order,
                "valid_until": p.valid_until,
                "status": "active",
                "updated_at": ctx.now,
            },
        )

    async def offer_withdrawn(ctx: saga.Ctx, p: OfferWithdrawn) -> None:
        await (await ctx.conn()).execute(
            sa.update(offers_view)
            .where(offers_view.c.offer_id == p.offer_id)
            .values(status="withdrawn", updated_at=ctx.now)
        )

    async def accepted(ctx: saga.Ctx, p: AssignmentAccepted) -> None:
        if await saga.move_leg(ctx, p.leg_id, "accepted", allowed_from=("proposed",)):
            await saga.bump_supplier(ctx, p.supplier_id, "accepted")

    async def declined(ctx: saga.Ctx, p: AssignmentDeclined) -> None:
        await saga.leg_failed(
            ctx, p.leg_id, "declined", allowed_from=("proposed",), reason=p.reason
        )

    async def shipped(ctx: saga.Ctx, p: AssignmentShipped) -> None:
        # A supplier may ship straight away (an accept lost on the way is implied). A leg
        # called off (cancelled, timed out) that the supplier shipped before hearing of it
        # is on its way all the same: it goes on to be received, not lost (a timed-out
        # leg's remainder was re-matched, so the request may then get more than it asked).
        moved = await saga.move_leg(
            ctx,
            p.leg_id,
            "shipped",
            allowed_from=("accepted", "proposed", "cancelled", "timed_out"),
            reason=p.note,
            extra={"sent_quantity": p.quantity},
            source=("supplier", p.supplier_id),
        )
        if moved:
            await saga.bump_supplier(ctx, p.supplier_id, "shipped")

    # -- catalog.events -------------------------------------------------------------------

    async def product(ctx: saga.Ctx, p: ProductCreated) -> None:
        await _upsert(
            await ctx.conn(),
            products_view,
            {"sku": p.sku},
            {
                "case_pack": p.case_pack,
                "min_transfer_qty": p.min_transfer_qty,
                "pareto_class": p.pareto_class,
                "perishable": p.perishable,
                "retired": False,
                "updated_at": ctx.now,
            },
        )

    async def retired(ctx: saga.Ctx, p: ProductRetired) -> None:
        conn = await ctx.conn()
        done = await conn.execute(
            sa.update(products_view)
            .where(products_view.c.sku == p.sku)
            .values(retired=True, updated_at=ctx.now)
        )
        if done.rowcount == 0:
            await conn.execute(
                sa.insert(products_view).values(
                    sku=p.sku,
                    case_pack=1,
                    min_transfer_qty=1,
                    pareto_class="C",
                    perishable=False,
                    retired=True,
                    updated_at=ctx.now,
                )
            )

    prefix = settings.group_prefix
    return [
        ConsumerSpec(
            f"{prefix}-stock",
            [STOCK_EVENTS],
            {
                "stock.outlet_registered": step(outlet_registered),
                "stock.level_changed": step(level_changed),
                "stock.surplus": step(surplus),
                "stock.low": step(low),
                "stock.reserved": step(reserved),
                "stock.reservation_rejected": step(rejected),
                "stock.reservation_released": step(released),
                "stock.dispatched": step(dispatched),
                "stock.dispatch_rejected": step(dispatch_rejected),
                "stock.received": step(received),
            },
        ),
        ConsumerSpec(
            f"{prefix}-supplier",
            [SUPPLIER_EVENTS],
            {
                "supplier.registered": step(supplier_registered),
                "supplier.offer_published": step(offer_published),
                "supplier.offer_withdrawn": step(offer_withdrawn),
                "supplier.assignment_accepted": step(accepted),
                "supplier.assignment_declined": step(declined),
                "supplier.assignment_shipped": step(shipped),
            },
        ),
        ConsumerSpec(
            f"{prefix}-catalog",
            [CATALOG_EVENTS],
            {
                "catalog.product_created": step(product),
                "catalog.product_updated": step(product),
                "catalog.product_retired": step(retired),
            },
        ),
    ]
