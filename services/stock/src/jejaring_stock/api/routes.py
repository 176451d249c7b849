"""The stock API. Every write runs in one unit of work: the ledger movements, the level
projection and the events commit together, or nothing does."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse

from jejaring_shared.app import UoW
from jejaring_shared.contracts import utcnow
from jejaring_shared.csv_import import decode_csv
from jejaring_shared.errors import ApiError

from .. import application as app
from ..adapters import repository as repo
from ..config import StockSettings
from ..domain.model import Level, MovementKind
from .models import (
    AdjustmentIn,
    Id,
    LevelSettings,
    OutletIn,
    OutletPatch,
    ReceiptIn,
    ReleaseIn,
    ReservationIn,
    ReturnIn,
    SalesBatch,
    TransferInIn,
    WriteOffIn,
)

router = APIRouter(prefix="/api/v1", tags=["stock"])

Actor = Annotated[str, Header(alias="X-Actor", max_length=100)]
MAX_CSV_BYTES = 5_000_000
FUTURE_TOLERANCE = timedelta(days=1)
"""POS clocks drift; a sale more than this far in the future is a mistake."""


def policy(request: Request) -> app.Policy:
    settings: StockSettings = request.app.state.runtime.settings
    return policy_from(settings)


def policy_from(settings: StockSettings) -> app.Policy:
    return app.Policy(
        cover_limit_days=settings.cover_limit_days,
        default_lead_time_days=settings.default_lead_time_days,
        review_days=settings.review_days,
        velocity_window_days=settings.velocity_window_days,
        velocity_alpha=settings.velocity_alpha,
    )


def _level_json(level: Level, stale: int = 0) -> dict[str, Any]:
    # Expired reservations stop counting at once, before the sweeper releases them.
    reserved = level.reserved - stale
    available = level.on_hand - reserved
    return {
        "sku": level.sku,
        "on_hand": level.on_hand,
        "reserved": reserved,
        "available": available,
        "reorder_point": level.reorder_point,
        "maximum": level.maximum,
        "safety_stock": level.safety_stock,
        "reorder_point_pinned": level.rop_pinned,
        "maximum_pinned": level.max_pinned,
        "auto_restock": level.auto_restock,
        "lead_time_days": level.lead_time_days,
        "daily_rate": level.velocity,
        "days_of_cover": level.days_of_cover(available),
        "low": available <= level.reorder_point,
    }


def _outlet_json(o: dict[str, Any]) -> dict[str, Any]:
    return {k: o[k] for k in ("id", "name", "community", "region", "lat", "lon", "status")} | {
        "updated_at": app.aware(o["updated_at"]).isoformat()
    }


# -- outlets --------------------------------------------------------------------------------


@router.post("/outlets", status_code=201)
async def register_outlet(body: OutletIn, uow: UoW) -> dict[str, Any]:
    """Register an outlet (ops); raises stock.outlet_registered."""
    async with uow:
        row = await app.register_outlet(uow, body.model_dump(), utcnow())
        await uow.commit()
    return _outlet_json(row)


@router.get("/outlets")
async def list_outlets(
    uow: UoW, status: str | None = None, region: str | None = None
) -> dict[str, Any]:
    async with uow:
        rows = await repo.list_outlets(await uow.session.connection(), status=status, region=region)
    return {"outlets": [_outlet_json(r) for r in rows]}


@router.get("/outlets/{outlet_id}")
async def get_outlet(outlet_id: Id, uow: UoW) -> dict[str, Any]:
    async with uow:
        return _outlet_json(await app.require_outlet(await uow.session.connection(), outlet_id))


@router.patch("/outlets/{outlet_id}")
async def change_outlet(outlet_id: Id, body: OutletPatch, uow: UoW) -> dict[str, Any]:
    """Change an outlet's details or status (active, at_risk, closed)."""
    changes = body.model_dump(exclude_unset=True)
    for name in ("name", "status"):
        if name in changes and changes[name] is None:
            raise ApiError(422, "required", f"{name} cannot be null", name)
    async with uow:
        row = await app.change_outlet(uow, outlet_id, changes, utcnow())
        await uow.commit()
    return _outlet_json(row)


# -- levels ---------------------------------------------------------------------------------


@router.get("/outlets/{outlet_id}/stock")
async def get_stock(outlet_id: Id, uow: UoW) -> dict[str, Any]:
    """Levels with on hand, reserved, available, days of cover."""
    async with uow:
        conn = await uow.session.connection()
        await app.require_outlet(conn, outlet_id)
        levels = await repo.read_levels(conn, outlet_id, utcnow())
    return {"outlet_id": outlet_id, "levels": [_level_json(lv, stale) for lv, stale in levels]}


@router.get("/outlets/{outlet_id}/stock/{sku}")
async def get_level(outlet_id: Id, sku: Id, uow: UoW) -> dict[str, Any]:
    async with uow:
        conn = await uow.session.connection()
        await app.require_outlet(conn, outlet_id)
        levels = await repo.read_levels(conn, outlet_id, utcnow(), sku)
    if not levels:
        raise ApiError(404, "level_not_found", f"outlet {outlet_id} has no {sku}", "sku")
    return _level_json(*levels[0])


@router.put("/outlets/{outlet_id}/stock/{sku}/settings")
async def set_level_settings(
    outlet_id: Id, sku: Id, body: LevelSettings, request: Request, uow: UoW
) -> dict[str, Any]:
    """Ops pin a reorder point or maximum (null unpins), set safety stock, lead time and
    auto-restock. Only the fields sent change."""
    values = body.model_dump(exclude_unset=True)
    async with uow:
        txn = app.StockTxn(uow, policy(request), utcnow())
        await app.require_outlet(await txn.conn(), outlet_id)
        level = (await txn.load(outlet_id, [sku]))[sku]
        app.apply_settings(level, values)
        txn.touch(level)
        await txn.finish()
        await uow.commit()
    return _level_json(level)


@router.get("/outlets/{outlet_id}/movements")
async def list_movements(
    outlet_id: Id,
    uow: UoW,
    sku: str | None = None,
    after_id: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The ledger, oldest first; page with after_id = the last id seen."""
    async with uow:
        conn = await uow.session.connection()
        await app.require_outlet(conn, outlet_id)
        rows = await repo.list_movements(conn, outlet_id, sku=sku, after_id=after_id, limit=limit)
    return {
        "movements": [
            {
                **r,
                "occurred_at": app.aware(r["occurred_at"]).isoformat(),
                "recorded_at": app.aware(r["recorded_at"]).isoformat(),
            }
            for r in rows
        ]
    }


@router.get("/outlets/{outlet_id}/ledger-check")
async def ledger_check(outlet_id: Id, uow: UoW) -> dict[str, Any]:
    """Recompute on hand and reserved from the ledger and the reservations and list every
    level that disagrees (there should be none)."""
    async with uow:
        conn = await uow.session.connection()
        await app.require_outlet(conn, outlet_id)
        sums = await repo.ledger_sums(conn, outlet_id)
        reserved = await repo.active_reserved_sums(conn, outlet_id)
        levels = await repo.read_levels(conn, outlet_id, utcnow())
    mismatches = [
        {
            "sku": lv.sku,
            "on_hand": lv.on_hand,
            "ledger": sums.get((outlet_id, lv.sku), 0),
            "reserved": lv.reserved,
            "reservations": reserved.get((outlet_id, lv.sku), 0),
        }
        for lv, _stale in levels
        if lv.on_hand != sums.get((outlet_id, lv.sku), 0)
        or lv.reserved != reserved.get((outlet_id, lv.sku), 0)
    ]
    return {"levels": len(levels), "mismatches": mismatches}


# -- movements ------------------------------------------------------------------------------


@router.post("/outlets/{outlet_id}/sales")
async def post_sales(
    outlet_id: Id, body: SalesBatch, request: Request, uow: UoW, actor: Actor = "pos"
) -> dict[str, Any]:
    """A POS batch (up to 1,000 lines). Lines sent before (same idempotency key) are
    listed as duplicates and count once. A sale is never refused for lack of stock."""
    now = utcnow()
    latest = now + FUTURE_TOLERANCE
    moves = []
    for i, line in enumerate(body.lines):
        sold_at = line["sold_at"]
        if sold_at > latest:
            raise ApiError(422, "sold_in_future", "sold_at is in the future", f"lines.{i}.sold_at")
        moves.append(
            app.MoveIn(
                line["sku"], MovementKind.SALE, -line["quantity"], line["idempotency_key"], sold_at
            )
        )
    async with uow:
        txn = app.StockTxn(uow, policy(request), now)
        recorded = await app.record_movements(txn, outlet_id, moves, actor, check_outlet=True)
        await txn.finish()
        await uow.commit()
    return {
        "received": len(moves),
        "accepted": len(recorded.accepted),
        "duplicates": recorded.duplicates,
    }


async def _one_movement(
    request: Request, uow: UoW, outlet_id: str, move: app.MoveIn, actor: str
) -> JSONResponse:
    async with uow:
        txn = app.StockTxn(uow, policy(request), utcnow())
        recorded = await app.record_movements(txn, outlet_id, [move], actor, check_outlet=True)
        await txn.finish()
        await uow.commit()
    duplicate = not recorded.accepted
    return JSONResponse(
        status_code=200 if duplicate else 201,
        content={"idempotency_key": move.idempotency_key, "duplicate": duplicate},
    )


@router.post("/outlets/{outlet_id}/receipts", status_code=201)
async def post_receipt(
    outlet_id: Id, body: ReceiptIn, request: Request, uow: UoW, actor: Actor = "api"
) -> JSONResponse:
    """Units received from the distribution center or a supplier."""
    if body.source == "supplier" and body.supplier_id is None:
        raise ApiError(422, "required", "supplier_id is required for a supplier", "supplier_id")
    move = app.MoveIn(
        body.sku,
        MovementKind.RECEIPT,
        body.quantity,
        body.idempotency_key,
        body.received_at or utcnow(),
        reason=body.source,
        reference=body.supplier_id or body.reference,
    )
    return await _one_movement(request, uow, outlet_id, move, actor)


@router.post("/outlets/{outlet_id}/write-offs", status_code=201)
async def post_write_off(
    outlet_id: Id, body: WriteOffIn, request: Request, uow: UoW, actor: Actor = "api"
) -> JSONResponse:
    """Damaged or expired units taken off the shelf."""
    reason = body.reason + (f": {body.note}" if body.note else "")
    move = app.MoveIn(
        body.sku,
        MovementKind.WRITE_OFF,
        -body.quantity,
        body.idempotency_key,
        body.occurred_at or utcnow(),
        reason=reason,
    )
    return await _one_movement(request, uow, outlet_id, move, actor)


@router.post("/outlets/{outlet_id}/returns", status_code=201)
async def post_return(
    outlet_id: Id, body: ReturnIn, request: Request, uow: UoW, actor: Actor = "api"
) -> JSONResponse:
    move = app.MoveIn(
        body.sku,
        MovementKind.RETURN,
        body.quantity,
        body.idempotency_key,
        body.occurred_at or utcnow(),
        reason=body.reason,
    )
    return await _one_movement(request, uow, outlet_id, move, actor)


@router.post("/outlets/{outlet_id}/adjustments", status_code=201)
async def post_adjustment(
    outlet_id: Id, body: AdjustmentIn, request: Request, uow: UoW, actor: Actor = "api"
) -> JSONResponse:
    """A stock count: the difference to on hand becomes an adjustment movement."""
    async with uow:
        txn = app.StockTxn(uow, policy(request), utcnow())
        await app.require_outlet(await txn.conn(), outlet_id)
        recorded, delta = await app.count_stock(
            txn,
            outlet_id,
            sku=body.sku,
            counted=body.counted,
            key=body.idempotency_key,
            reason=body.reason,
            actor=actor,
            occurred_at=body.counted_at or txn.now,
        )
        await txn.finish()
        await uow.commit()
    return JSONResponse(
        status_code=201 if recorded else 200,
        content={
            "idempotency_key": body.idempotency_key,
            "duplicate": not recorded,
            "delta": delta,
        },
    )


@router.post(
    "/outlets/{outlet_id}/opening-stock",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def import_opening_stock(
    outlet_id: Id, request: Request, uow: UoW, actor: Actor = "import"
) -> dict[str, Any]:
    """CSV of opening stock: header `sku,quantity[,reorder_point,maximum,safety_stock]`.
    Bad rows are listed with their line and reason; good rows are taken; a rerun takes
    nothing twice."""
    text = decode_csv(await request.body(), max_bytes=MAX_CSV_BYTES)
    # Validating 20,000 rows is a second or more of CPU: off the event loop, and before
    # the transaction, which it would otherwise hold open.
    parsed = await asyncio.to_thread(app.parse_opening_stock, text)
    async with uow:
        txn = app.StockTxn(uow, policy(request), utcnow())
        await app.require_outlet(await txn.conn(), outlet_id)
        report = await app.import_opening_stock(txn, outlet_id, parsed, actor)
        await txn.finish()
        await uow.commit()
    return report.model_dump(mode="json")


# -- reservations and transfers -------------------------------------------------------------


def _reservation_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "leg_id": r["leg_id"],
        "outlet_id": r["outlet_id"],
        "sku": r["sku"],
        "quantity": r["quantity"],
        "status": r["status"],
        "expires_at": app.aware(r["expires_at"]).isoformat(),
        "reason": r.get("reason"),
    }


@router.post("/outlets/{outlet_id}/reservations", status_code=201)
async def post_reservation(
    outlet_id: Id, body: ReservationIn, request: Request, uow: UoW
) -> dict[str, Any]:
    """Reserve units for a transfer leg, never beyond available; 409 says why not."""
    async with uow:
        txn = app.StockTxn(uow, policy(request), utcnow())
        await app.require_outlet(await txn.conn(), outlet_id)
        outcome = await app.reserve(
            txn,
            outlet_id=outlet_id,
            sku=body.sku,
            leg_id=body.leg_id,
            quantity=body.quantity,
            expires_in_s=body.expires_in_s,
            announce_rejection=False,
        )
        if not outcome.reserved:
            raise ApiError(
                409,
                outcome.reason or "rejected",
                f"cannot reserve {body.quantity} of {body.sku}: {outcome.reason} "
                f"(available {outcome.available})",
                "quantity" if outcome.reason == "insufficient_stock" else "leg_id",
            )
        await txn.finish()
        await uow.commit()
    assert outcome.reservation is not None
    return {**_reservation_json(outcome.reservation), "available": outcome.available}


@router.get("/outlets/{outlet_id}/reservations")
async def list_reservations(
    outlet_id: Id,
    uow: UoW,
    status: Literal["active", "released", "expired", "dispatched"] | None = None,
) -> dict[str, Any]:
    # An active reservation past its expiry shows (and filters) as expired before the
    # sweeper gets to it: both are read for either status, and filtered once relabelled.
    read: list[str] | None = None
    if status in ("active", "expired"):
        read = ["active", "expired"]
    elif status is not None:
        read = [status]
    async with uow:
        conn = await uow.session.connection()
        await app.require_outlet(conn, outlet_id)
        rows = await repo.list_reservations(conn, outlet_id, statuses=read)
    now = utcnow()
    out = []
    for r in rows:
        if r["status"] == "active" and app.aware(r["expires_at"]) <= now:
            r = {**r, "status": "expired"}  # not swept yet, but no longer counting
        if status is None or r["status"] == status:
            out.append(_reservation_json(r))
    return {"reservations": out}


async def _reservation_of(uow: UoW, outlet_id: str, leg_id: str) -> dict[str, Any]:
    res = await repo.get_reservation(await uow.session.connection(), leg_id)
    if res is None or res["outlet_id"] != outlet_id:
        raise ApiError(404, "reservation_not_found", f"no reservation for leg {leg_id}", "leg_id")
    return res


@router.post("/outlets/{outlet_id}/reservations/{leg_id}/release")
async def release_reservation(
    outlet_id: Id,
    leg_id: Id,
    request: Request,
    uow: UoW,
    body: Annotated[ReleaseIn | None, Body()] = None,
) -> dict[str, Any]:
    async with uow:
        await _reservation_of(uow, outlet_id, leg_id)
        txn = app.StockTxn(uow, policy(request), utcnow())
        res = await app.release(txn, leg_id=leg_id, reason=(body or ReleaseIn()).reason)
        await txn.finish()
        await uow.commit()
    assert res is not None
    return _reservation_json(res)


@router.post("/outlets/{outlet_id}/reservations/{leg_id}/dispatch")
async def dispatch_reservation(
    outlet_id: Id, leg_id: Id, request: Request, uow: UoW, actor: Actor = "api"
) -> dict[str, Any]:
    """The reserved units leave as a transfer-out movement."""
    async with uow:
        await _reservation_of(uow, outlet_id, leg_id)
        txn = app.StockTxn(uow, policy(request), utcnow())
        ok, reason = await app.dispatch(txn, leg_id=leg_id, actor=actor)
        await txn.finish()
        await uow.commit()  # an expired reservation found here is released either way
    if not ok:
        raise ApiError(
            409, reason or "rejected", f"cannot dispatch leg {leg_id}: {reason}", "leg_id"
        )
    async with uow:
        return _reservation_json(await _reservation_of(uow, outlet_id, leg_id))


@router.post("/outlets/{outlet_id}/transfers-in", status_code=201)
async def receive_transfer(
    outlet_id: Id, body: TransferInIn, request: Request, uow: UoW, actor: Actor = "api"
) -> JSONResponse:
    """Units of a transfer leg arrived; less than sent needs a reason."""
    if body.sent_quantity is not None and body.quantity < body.sent_quantity and not body.reason:
        raise ApiError(422, "reason_required", "less than sent needs a reason", "reason")
    async with uow:
        txn = app.StockTxn(uow, policy(request), utcnow())
        await app.require_outlet(await txn.conn(), outlet_id)
        fresh = await app.receive(
            txn,
            outlet_id=outlet_id,
            sku=body.sku,
            leg_id=body.leg_id,
            quantity=body.quantity,
            reason=body.reason,
            actor=actor,
        )
        await txn.finish()
        await uow.commit()
    return JSONResponse(
        status_code=201 if fresh else 200, content={"leg_id": body.leg_id, "duplicate": not fresh}
    )


# -- planning -------------------------------------------------------------------------------


@router.get("/pareto")
async def pareto(request: Request, uow: UoW) -> dict[str, Any]:
    """Pareto class per sku across the network: A = the skus making up 80% of units sold."""
    async with uow:
        return await app.network_pareto(uow, policy(request), utcnow())


@router.post("/velocity/refresh")
async def refresh_velocity(request: Request) -> dict[str, Any]:
    """Recompute sales rates and derived reorder points now (it also runs periodically)."""
    runtime = request.app.state.runtime
    done = await app.refresh_velocity(runtime.uow, policy(request), utcnow())
    return {"levels_changed": done.levels_changed, "outlets_failed": done.outlets_failed}
