"""The transfer API: restock requests, dispatch and receipt of legs, KPIs.

Every write runs in one unit of work: the state, its history and its events (and the
commands to stock) commit together, or nothing does.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jejaring_shared.app import UoW
from jejaring_shared.contracts import utcnow
from jejaring_shared.contracts.stock import DispatchStock, ReceiveStock
from jejaring_shared.errors import ApiError
from jejaring_shared.fields import Text, in_utc

from .. import saga
from ..adapters.tables import legs, restock_requests, saga_history
from ..config import TransferSettings
from .intake import intake_of

router = APIRouter(prefix="/api/v1", tags=["transfer"])

Id = Annotated[str, Path(min_length=1, max_length=64)]
IdStr = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class RestockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outlet_id: IdStr
    sku: IdStr
    quantity: int = Field(gt=0, le=1_000_000)
    needed_by: datetime | None = None

    @field_validator("needed_by")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        # A time without an offset is taken as UTC; one out of range in UTC is a 422.
        return v.replace(tzinfo=UTC) if v.tzinfo is None else in_utc(v)


class ReceiveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: int = Field(ge=0, le=1_000_000)
    reason: Annotated[str, Text] | None = Field(default=None, max_length=500)


def _settings(request: Request) -> TransferSettings:
    settings: TransferSettings = request.app.state.runtime.settings
    return settings


def _iso(dt: datetime | None) -> str | None:
    value = saga.aware(dt)
    return value.isoformat() if value else None


@router.post("/restock-requests", status_code=202)
async def create_restock_request(body: RestockIn, request: Request) -> JSONResponse:
    """Ask for restock; answered once the request is stored and matched (its legs, events
    and stock.reserve commands committed with it); the saga goes on from there. A second
    request for an outlet and sku with one open is merged into it. Requests arriving
    together are committed together (see api/intake.py)."""
    now = utcnow()
    if body.needed_by is not None:
        if body.needed_by <= now:
            raise ApiError(422, "in_the_past", "needed_by must be in the future", "needed_by")
        horizon = _settings(request).needed_by_horizon_s
        if body.needed_by > now + timedelta(seconds=horizon):
            # Its reservations would be held until then (a date near year 9999 overflowed).
            raise ApiError(
                422,
                "too_far",
                f"needed_by is more than {horizon / 86400:g} days ahead",
                "needed_by",
            )
    runtime = request.app.state.runtime
    intake = intake_of(runtime, runtime.uow, _settings(request))
    opened = await intake.submit(
        outlet_id=body.outlet_id,
        sku=body.sku,
        quantity=body.quantity,
        needed_by=body.needed_by,
        now=now,
    )
    return JSONResponse(
        status_code=202,
        content={
            "id": opened.request_id,
            "status": opened.status,
            "quantity": opened.quantity,
            "merged": opened.merged,
        },
    )


def _leg_json(leg: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": leg["id"],
        "source_kind": leg["source_kind"],
        "source_id": leg["source_id"],
        "offer_id": leg["offer_id"],
        "quantity": leg["quantity"],
        "unit_price": leg["unit_price"],
        "state": leg["state"],
        "accept_by": _iso(leg["accept_by"]),
        "reservation_expires_at": _iso(leg["reservation_expires_at"]),
        "sent_quantity": leg["sent_quantity"],
        "received_quantity": leg["received_quantity"],
        "reason": leg["reason"],
        "cost": leg["terms"],
        "created_at": _iso(leg["created_at"]),
        "updated_at": _iso(leg["updated_at"]),
    }


@router.get("/restock-requests/{request_id}")
async def get_restock_request(request_id: Id, uow: UoW) -> dict[str, Any]:
    """The request, its legs with their states, the history and the match explanations."""
    async with uow:
        conn = await uow.session.connection()
        row = await saga.one(
            conn, sa.select(restock_requests).where(restock_requests.c.id == request_id)
        )
        if row is None:
            raise ApiError(404, "request_not_found", f"no restock request {request_id!r}", "id")
        request_legs = await saga.legs_of(conn, request_id)
        history = await saga.many(
            conn,
            sa.select(saga_history)
            .where(saga_history.c.request_id == request_id)
            .order_by(saga_history.c.id),
        )
    return {
        "id": row["id"],
        "outlet_id": row["outlet_id"],
        "sku": row["sku"],
        "requested_quantity": row["requested_quantity"],
        "quantity": row["quantity"],
        "received": row["received"],
        "remaining_to_match": saga.remainder(row, request_legs)
        if row["status"] in saga.OPEN_STATES
        else 0,
        "needed_by": _iso(row["needed_by"]),
        "expires_at": _iso(row["expires_at"]),
        "status": row["status"],
        "origin": row["origin"],
        "merged": row["merged"],
        "excluded_sources": row["excluded"],
        "created_at": _iso(row["created_at"]),
        "first_reserved_at": _iso(row["first_reserved_at"]),
        "closed_at": _iso(row["closed_at"]),
        "legs": [_leg_json(leg) for leg in request_legs],
        "history": [
            {
                "at": _iso(h["at"]),
                "leg_id": h["leg_id"],
                "from": h["from_state"],
                "to": h["to_state"],
                "reason": h["reason"],
            }
            for h in history
        ],
        "explanation": row["explanation"] or [],
    }


@router.get("/restock-requests")
async def list_restock_requests(
    uow: UoW,
    outlet_id: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    stmt = sa.select(restock_requests).order_by(restock_requests.c.created_at.desc()).limit(limit)
    if outlet_id:
        stmt = stmt.where(restock_requests.c.outlet_id == outlet_id)
    if status:
        stmt = stmt.where(restock_requests.c.status == status)
    async with uow:
        rows = await saga.many(await uow.session.connection(), stmt)
    return {
        "requests": [
            {
                k: (_iso(r[k]) if isinstance(r[k], datetime) else r[k])
                for k in ("id", "outlet_id", "sku", "quantity", "received", "status", "created_at")
            }
            for r in rows
        ]
    }


@router.post("/restock-requests/{request_id}/cancel")
async def cancel_restock_request(request_id: Id, request: Request, uow: UoW) -> dict[str, Any]:
    """Cancel: every reservation not yet dispatched is released; legs on their way may
    still be received."""
    async with uow:
        ctx = saga.Ctx(uow, _settings(request), utcnow())
        row = await saga.stop_request(ctx, request_id, "cancelled", "cancelled by the outlet")
        await uow.commit()
    return {"id": request_id, "status": row["status"]}


async def _leg_or_404(uow: Any, leg_id: str) -> dict[str, Any]:
    leg = await saga.get_leg(await uow.session.connection(), leg_id)
    if leg is None:
        raise ApiError(404, "leg_not_found", f"no transfer leg {leg_id!r}", "leg_id")
    return leg


@router.get("/transfers/{leg_id}")
async def get_leg(leg_id: Id, uow: UoW) -> JSONResponse:
    """One leg: its source, destination outlet, quantities, state and deadlines (the
    gateway uses it to check that an outlet acts only on its own legs)."""
    async with uow:
        leg = await _leg_or_404(uow, leg_id)
    return JSONResponse(jsonable_encoder(leg))


@router.post("/transfers/{leg_id}/dispatch", status_code=202)
async def dispatch_leg(leg_id: Id, request: Request, uow: UoW) -> JSONResponse:
    """The source outlet sends the reserved units (stock.dispatch); the leg becomes
    dispatched when stock confirms."""
    async with uow:
        leg = await _leg_or_404(uow, leg_id)
        if leg["source_kind"] != "outlet":
            raise ApiError(409, "not_an_outlet_leg", "a supplier leg is shipped by the supplier")
        if leg["state"] in ("dispatched", "received"):
            return JSONResponse({"id": leg_id, "state": leg["state"]}, status_code=200)
        if leg["state"] != "reserved":
            raise ApiError(
                409, "leg_not_reserved", f"the leg is {leg['state']}, not reserved", "leg_id"
            )
        ctx = saga.Ctx(uow, _settings(request), utcnow())
        ctx.command(
            DispatchStock(outlet_id=leg["source_id"], sku=leg["sku"], leg_id=leg_id),
            f"{leg['source_id']}:{leg['sku']}",
            leg["request_id"],
        )
        await ctx.history(
            leg["request_id"],
            "reserved",
            leg_id=leg_id,
            from_state="reserved",
            reason="dispatch requested",
        )
        await uow.commit()
    return JSONResponse({"id": leg_id, "state": "reserved", "dispatch": "requested"}, 202)


@router.post("/transfers/{leg_id}/receive", status_code=202)
async def receive_leg(leg_id: Id, body: ReceiveIn, request: Request, uow: UoW) -> JSONResponse:
    """The destination received the leg (stock.receive); less than sent needs a reason."""
    async with uow:
        leg = await _leg_or_404(uow, leg_id)
        if leg["state"] == "received":
            return JSONResponse({"id": leg_id, "state": "received"}, status_code=200)
        if leg["state"] not in saga.IN_TRANSIT:
            raise ApiError(
                409, "leg_not_in_transit", f"the leg is {leg['state']}, not on its way", "leg_id"
            )
        sent = leg["sent_quantity"] or leg["quantity"]
        if body.quantity > sent:
            raise ApiError(422, "too_large", f"more than the {sent} sent", "quantity")
        if body.quantity < sent and not (body.reason and body.reason.strip()):
            raise ApiError(422, "reason_required", "a partial receipt needs a reason", "reason")
        ctx = saga.Ctx(uow, _settings(request), utcnow())
        ctx.command(
            ReceiveStock(
                outlet_id=leg["outlet_id"],
                sku=leg["sku"],
                leg_id=leg_id,
                quantity=body.quantity,
                sent_quantity=sent,
                reason=body.reason,
            ),
            f"{leg['outlet_id']}:{leg['sku']}",
            leg["request_id"],
        )
        await ctx.history(
            leg["request_id"],
            leg["state"],
            leg_id=leg_id,
            from_state=leg["state"],
            reason=f"receipt of {body.quantity} reported",
        )
        await uow.commit()
    return JSONResponse({"id": leg_id, "state": leg["state"], "receive": "requested"}, 202)


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return round(ordered[k], 3)


AGE_BUCKETS = ((3600, "lt_1h"), (6 * 3600, "1h_6h"), (24 * 3600, "6h_24h"))


@router.get("/kpis")
async def kpis(uow: UoW, outlet_id: str | None = None) -> dict[str, Any]:
    """Fill rate (received over requested, closed requests), time to fill (p50/p90 of the
    fulfilled), units filled by peers and by suppliers, open requests by age."""
    now = utcnow()
    req = sa.select(
        restock_requests.c.status,
        restock_requests.c.quantity,
        restock_requests.c.received,
        restock_requests.c.created_at,
        restock_requests.c.closed_at,
    )
    by_kind = (
        sa.select(legs.c.source_kind, sa.func.sum(legs.c.received_quantity))
        .where(legs.c.state == "received")
        .group_by(legs.c.source_kind)
    )
    if outlet_id:
        req = req.where(restock_requests.c.outlet_id == outlet_id)
        by_kind = by_kind.where(legs.c.outlet_id == outlet_id)
    async with uow:
        conn = await uow.session.connection()
        rows = await saga.many(conn, req)
        kinds = {k: int(v or 0) for k, v in (await conn.execute(by_kind)).all()}
    return kpis_of(rows, kinds, now)


def kpis_of(rows: list[dict[str, Any]], kinds: dict[str, int], now: datetime) -> dict[str, Any]:
    """The KPIs from the requests' rows and the units received by source kind. Requested
    is each closed request's quantity (after rounding to case packs: what the network was
    asked to move), cancelled ones included (an outlet that gave up waiting was not
    served). Received counts at most that per request: a supplier shipping after its
    timed-out leg was re-matched over-fills one request, which must not hide another
    left empty."""
    closed = [r for r in rows if r["status"] not in saga.OPEN_STATES]
    requested = sum(r["quantity"] for r in closed)
    received = sum(min(r["received"], r["quantity"]) for r in closed)
    fill_times = [
        (saga.aware(r["closed_at"]) - saga.aware(r["created_at"])).total_seconds()  # type: ignore[operator]
        for r in rows
        if r["status"] == "fulfilled" and r["closed_at"] is not None
    ]
    ages = {name: 0 for _limit, name in AGE_BUCKETS} | {"gt_24h": 0}
    for r in rows:
        if r["status"] in saga.OPEN_STATES:
            age = (now - saga.aware(r["created_at"])).total_seconds()  # type: ignore[operator]
            name = next((n for limit, n in AGE_BUCKETS if age < limit), "gt_24h")
            ages[name] += 1
    total_filled = sum(kinds.values())
    return {
        "requests": len(rows),
        "closed": len(closed),
        "fill_rate": round(received / requested, 4) if requested else None,
        "requested_units": requested,
        "received_units": received,
        "time_to_fill_s": {
            "p50": _percentile(fill_times, 50),
            "p90": _percentile(fill_times, 90),
            "n": len(fill_times),
        },
        "filled_units": {"peers": kinds.get("outlet", 0), "suppliers": kinds.get("supplier", 0)},
        "share": {
            "peers": round(kinds.get("outlet", 0) / total_filled, 4) if total_filled else None,
            "suppliers": round(kinds.get("supplier", 0) / total_filled, 4)
            if total_filled
            else None,
        },
        "open_by_age": ages,
    }
