"""Handlers of transfer's commands on stock.commands; each answers with events.

The consumer runner gives every handler its own unit of work (with the inbox) and commits
it; handlers never commit.
"""

from __future__ import annotations

from jejaring_shared.consumer import Handler
from jejaring_shared.contracts import Envelope, utcnow
from jejaring_shared.contracts.stock import (
    DispatchStock,
    ReceiveStock,
    ReleaseStock,
    ReservationReleased,
    ReserveStock,
)
from jejaring_shared.db import UnitOfWork

from .. import application as app
from ..adapters import repository as repo

ACTOR = "transfer"


def command_handlers(policy: app.Policy) -> dict[str, Handler]:
    async def on_reserve(uow: UnitOfWork, envelope: Envelope, cmd: ReserveStock) -> None:
        txn = app.StockTxn(uow, policy, utcnow(), cause=envelope)
        await app.reserve(
            txn,
            outlet_id=cmd.outlet_id,
            sku=cmd.sku,
            leg_id=cmd.leg_id,
            quantity=cmd.quantity,
            expires_in_s=cmd.expires_in_s,
            announce_rejection=True,
        )
        await txn.finish()

    async def on_release(uow: UnitOfWork, envelope: Envelope, cmd: ReleaseStock) -> None:
        txn = app.StockTxn(uow, policy, utcnow(), cause=envelope)
        before = await repo.get_reservation(await txn.conn(), cmd.leg_id)
        res = await app.release(txn, leg_id=cmd.leg_id, reason=cmd.reason)
        if before is None or res is None or before["status"] != "active":
            # Nothing (left) to release: say so, so the saga's compensation completes.
            status = res["status"] if res else "not_reserved"
            txn.publish(
                ReservationReleased(
                    outlet_id=cmd.outlet_id,
                    sku=cmd.sku,
                    leg_id=cmd.leg_id,
                    quantity=0,
                    reason=f"nothing_to_release: {status}",
                ),
                f"{cmd.outlet_id}:{cmd.sku}",
            )
        await txn.finish()

    async def on_dispatch(uow: UnitOfWork, envelope: Envelope, cmd: DispatchStock) -> None:
        txn = app.StockTxn(uow, policy, utcnow(), cause=envelope)
        ok, reason = await app.dispatch(txn, leg_id=cmd.leg_id, actor=ACTOR)
        if not ok:
            await app.reject_dispatch(txn, cmd.outlet_id, cmd.sku, cmd.leg_id, reason or "rejected")
        await txn.finish()

    async def on_receive(uow: UnitOfWork, envelope: Envelope, cmd: ReceiveStock) -> None:
        txn = app.StockTxn(uow, policy, utcnow(), cause=envelope)
        reason = cmd.reason
        if cmd.sent_quantity is not None and cmd.quantity < cmd.sent_quantity and not reason:
            # The units arrived whatever the paperwork says; record the fact, flag the gap.
            reason = f"short by {cmd.sent_quantity - cmd.quantity}, no reason given"
        await app.receive(
            txn,
            outlet_id=cmd.outlet_id,
            sku=cmd.sku,
            leg_id=cmd.leg_id,
            quantity=cmd.quantity,
            reason=reason,
            actor=ACTOR,
        )
        await txn.finish()

    return {
        "stock.reserve": on_reserve,
        "stock.release": on_release,
        "stock.dispatch": on_dispatch,
        "stock.receive": on_receive,
    }
