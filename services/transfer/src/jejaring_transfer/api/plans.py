"""Rebalancing plans: proposed from transfer's projections, approved or rejected by ops
line by line. An approved line becomes a restock request whose source is fixed to the
line's (saga.open_planned_request) and then follows the ordinary saga.

Proposing reads the projections in one short transaction, solves with no transaction open
(in a worker thread: the solve is CPU-heavy) and writes the plan in a second one.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.app import UoW
from jejaring_shared.contracts import utcnow
from jejaring_shared.contracts.transfer import PlanLineApproved, PlanLineRejected, PlanProposed
from jejaring_shared.db import UnitOfWork, is_conflict
from jejaring_shared.errors import ApiError

from .. import saga
from ..adapters.tables import (
    legs,
    offers_view,
    outlets_view,
    products_view,
    rebalancing_plan_lines,
    rebalancing_plans,
    restock_requests,
    stock_view,
)
from ..config import TransferSettings
from ..domain import matching as m
from ..domain import plans
from .routes import _iso, _settings

router = APIRouter(prefix="/api/v1/rebalancing", tags=["rebalancing"])

Id = Annotated[str, Path(min_length=1, max_length=64)]
IdStr = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skus: list[IdStr] | None = Field(default=None, min_length=1, max_length=1000)
    horizon_days: int = Field(default=7, ge=1, le=60)
    max_lines: int = Field(default=500, ge=1, le=5000)


class LinesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[IdStr] | None = Field(default=None, min_length=1, max_length=5000)


# -- reading the projections ---------------------------------------------------------------


async def snapshot(conn: AsyncConnection, skus: list[str] | None, now: datetime) -> plans.Snapshot:
    """What the projections know, with the same deductions as matching: a donor's units
    promised to proposed legs, an offer's units held by live supplier legs; plus what open
    requests will still bring to each outlet."""

    def only(column: Any) -> Any:
        return sa.true() if skus is None else column.in_(skus)

    outlets = {
        r["outlet_id"]: m.Outlet(
            r["outlet_id"], r["community"], r["region"], r["lat"], r["lon"], r["status"]
        )
        for r in await saga.many(conn, sa.select(outlets_view))
    }
    products: dict[str, m.Product] = {}
    retired: set[str] = set()
    for r in await saga.many(conn, sa.select(products_view).where(only(products_view.c.sku))):
        if r["retired"]:
            retired.add(r["sku"])
        products[r["sku"]] = m.Product(
            r["sku"], r["case_pack"], r["min_transfer_qty"], r["pareto_class"], r["perishable"]
        )
    pending: dict[tuple[str, str], int] = {}
    held: dict[str, int] = {}
    for leg in await saga.many(
        conn,
        sa.select(
            legs.c.source_kind, legs.c.source_id, legs.c.offer_id, legs.c.sku, legs.c.quantity
        )
        .where(only(legs.c.sku))
        .where(legs.c.state.in_(("proposed", "accepted", "shipped", "received")))
        .where(sa.or_(legs.c.source_kind == "supplier", legs.c.state == "proposed")),
    ):
        if leg["source_kind"] == "outlet":
            key = (leg["source_id"], leg["sku"])
            pending[key] = pending.get(key, 0) + leg["quantity"]
        elif leg["offer_id"]:
            held[leg["offer_id"]] = held.get(leg["offer_id"], 0) + leg["quantity"]
    incoming: dict[tuple[str, str], int] = {}
    for r in await saga.many(
        conn,
        sa.select(
            restock_requests.c.outlet_id,
            restock_requests.c.sku,
            restock_requests.c.quantity,
            restock_requests.c.received,
        ).where(restock_requests.c.status.in_(saga.OPEN_STATES), only(restock_requests.c.sku)),
    ):
        key = (r["outlet_id"], r["sku"])
        incoming[key] = incoming.get(key, 0) + max(0, r["quantity"] - r["received"])
    # The daily rate comes with stock.level_changed; until a level has one, shortness is
    # judged on the reorder point alone.
    levels = [
        plans.Level(
            r["outlet_id"],
            r["sku"],
            r["available"] - pending.get((r["outlet_id"], r["sku"]), 0),
            r["reorder_point"],
            r["maximum"],
            r["daily_rate"],
            incoming.get((r["outlet_id"], r["sku"]), 0),
        )
        for r in await saga.many(conn, sa.select(stock_view).where(only(stock_view.c.sku)))
        if r["sku"] not in retired
    ]
    offers = [
        m.Offer(
            r["offer_id"],
            r["supplier_id"],
            r["sku"],
            r["quantity"] - held.get(r["offer_id"], 0),
            r["unit_price"],
            r["lead_time_hours"],
            r["min_order"],
            valid_until=saga.aware(r["valid_until"]),
        )
        for r in await saga.many(
            conn,
            sa.select(offers_view).where(offers_view.c.status == "active", only(offers_view.c.sku)),
        )
        if r["sku"] not in retired
    ]
    return plans.Snapshot(outlets, levels, offers, products, now)


# -- answers -------------------------------------------------------------------------------


def _line_json(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": line["id"],
        "sku": line["sku"],
        "source_kind": line["source_kind"],
        "source_id": line["source_id"],
        "offer_id": line["offer_id"],
        "outlet_id": line["outlet_id"],
        "quantity": line["quantity"],
        "cost": line["cost"],
        "cover_after_days": line["cover_after_days"],
        "status": line["status"],
        "request_id": line["request_id"],
    }


def _summary(plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": plan["id"],
        "status": plan["status"],
        "created_at": _iso(plan["created_at"]),
        "updated_at": _iso(plan["updated_at"]),
        "horizon_days": plan["horizon_days"],
        "skus": plan["skus"],
        "max_lines": plan["max_lines"],
        "totals": {
            "lines": plan["lines"],
            "units": plan["units"],
            "cost": plan["cost"],
            "stockouts_avoided": plan["stockouts_avoided"],
            "short": plan["short"],
        },
    }


async def _plan_or_404(conn: AsyncConnection, plan_id: str, *, lock: bool) -> dict[str, Any]:
    stmt = sa.select(rebalancing_plans).where(rebalancing_plans.c.id == plan_id)
    plan = await saga.one(conn, stmt.with_for_update() if lock else stmt)
    if plan is None:
        raise ApiError(404, "plan_not_found", f"no rebalancing plan {plan_id!r}", "id")
    return plan


async def _lines_of(conn: AsyncConnection, plan_id: str) -> list[dict[str, Any]]:
    return await saga.many(
        conn,
        sa.select(rebalancing_plan_lines)
        .where(rebalancing_plan_lines.c.plan_id == plan_id)
        .order_by(rebalancing_plan_lines.c.position),
    )


async def _plan_json(conn: AsyncConnection, plan_id: str) -> dict[str, Any]:
    plan = await _plan_or_404(conn, plan_id, lock=False)
    return {**_summary(plan), "lines": [_line_json(x) for x in await _lines_of(conn, plan_id)]}


# -- routes --------------------------------------------------------------------------------


@router.post("/plans", status_code=201)
async def propose_plan(request: Request, uow: UoW, body: PlanIn | None = None) -> JSONResponse:
    """Propose a plan from the projections: which outlets will be short within the horizon,
    and what to move to them from outlets in surplus or supplier offers, at least cost."""
    body = body or PlanIn()
    now = utcnow()
    async with uow:
        snap = await snapshot(await uow.session.connection(), body.skus, now)
    settings = _settings(request)
    proposal = await asyncio.to_thread(
        plans.propose,
        snap,
        horizon_days=body.horizon_days,
        max_lines=body.max_lines,
        solve=plans.search_solver(settings.plan_search_effort, settings.plan_lns_rounds),
    )
    plan_id = saga.new_id("plan")
    async with uow:
        conn = await uow.session.connection()
        await conn.execute(
            sa.insert(rebalancing_plans).values(
                id=plan_id,
                status="proposed",
                horizon_days=body.horizon_days,
                skus=body.skus,
                max_lines=body.max_lines,
                lines=len(proposal.lines),
                units=proposal.units,
                cost=proposal.cost,
                stockouts_avoided=proposal.stockouts_avoided,
                short=proposal.short,
                created_at=now,
                updated_at=now,
            )
        )
        if proposal.lines:
            await conn.execute(
                sa.insert(rebalancing_plan_lines),
                [
                    {
                        "id": saga.new_id("line"),
                        "plan_id": plan_id,
                        "position": i,
                        "sku": line.sku,
                        "source_kind": line.source_kind,
                        "source_id": line.source_id,
                        "offer_id": line.offer_id,
                        "outlet_id": line.outlet_id,
                        "quantity": line.quantity,
                        "cost": line.cost,
                        "cover_after_days": line.cover_after_days,
                        "status": "proposed",
                        "request_id": None,
                        "decided_at": None,
                    }
                    for i, line in enumerate(proposal.lines)
                ],
            )
        uow.publish(
            PlanProposed(
                plan_id=plan_id,
                horizon_days=body.horizon_days,
                skus=body.skus,
                lines=len(proposal.lines),
                units=proposal.units,
                cost=proposal.cost,
                stockouts_avoided=proposal.stockouts_avoided,
                short=proposal.short,
            ),
            key=plan_id,
            correlation_id=plan_id,
        )
        await uow.commit()
        # The commit released the connection: read the answer on a fresh one.
        answer = await _plan_json(await uow.session.connection(), plan_id)
    return JSONResponse(answer, status_code=201)


@router.get("/plans/{plan_id}")
async def get_plan(plan_id: Id, uow: UoW) -> dict[str, Any]:
    async with uow:
        return await _plan_json(await uow.session.connection(), plan_id)


@router.get("/plans")
async def list_plans(
    uow: UoW,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """Plans, newest first, without their lines."""
    async with uow:
        conn = await uow.session.connection()
        total = await conn.scalar(sa.select(sa.func.count()).select_from(rebalancing_plans))
        rows = await saga.many(
            conn,
            sa.select(rebalancing_plans)
            .order_by(rebalancing_plans.c.created_at.desc(), rebalancing_plans.c.id)
            .limit(limit)
            .offset(offset),
        )
    return {"items": [_summary(r) for r in rows], "total": total, "limit": limit, "offset": offset}


def _chosen(lines: list[dict[str, Any]], ids: list[str] | None) -> list[dict[str, Any]]:
    """The lines named (all lines when none are), refusing ids the plan does not have."""
    if ids is None:
        return lines
    by_id = {line["id"]: line for line in lines}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ApiError(
            422, "unknown_line", f"not lines of this plan: {', '.join(unknown[:10])}", "lines"
        )
    return [by_id[i] for i in dict.fromkeys(ids)]


async def _finish(conn: AsyncConnection, plan: dict[str, Any], now: datetime) -> None:
    """A plan is decided once no line is left proposed: approved if any line was."""
    states = {line["status"] for line in await _lines_of(conn, plan["id"])}
    status = plan["status"]
    if "proposed" not in states:
        status = "approved" if "approved" in states else "rejected"
    await conn.execute(
        sa.update(rebalancing_plans)
        .where(rebalancing_plans.c.id == plan["id"])
        .values(status=status, updated_at=now)
    )


def _line_event(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "plan_id": line["plan_id"],
        "line_id": line["id"],
        "sku": line["sku"],
        "source_kind": line["source_kind"],
        "source_id": line["source_id"],
        "outlet_id": line["outlet_id"],
        "quantity": line["quantity"],
        "cost": line["cost"],
    }


async def _approve(
    uow: UnitOfWork, settings: TransferSettings, plan_id: str, ids: list[str] | None
) -> dict[str, Any]:
    now = utcnow()
    async with uow:
        conn = await uow.session.connection()
        plan = await _plan_or_404(conn, plan_id, lock=True)
        chosen = _chosen(await _lines_of(conn, plan_id), ids)
        rejected = [line["id"] for line in chosen if line["status"] == "rejected"]
        if rejected and ids is not None:
            raise ApiError(
                409, "line_rejected", f"rejected lines: {', '.join(rejected[:10])}", "lines"
            )
        todo = [line for line in chosen if line["status"] == "proposed"]
        if todo:
            age = now - saga.aware(plan["created_at"])  # type: ignore[operator]
            if age > timedelta(seconds=settings.plan_stale_after_s):
                raise ApiError(
                    409,
                    "plan_stale",
                    f"the plan is {int(age.total_seconds())} s old; propose a new one",
                    "id",
                )
            ctx = saga.Ctx(uow, settings, now)
            skus = sorted({line["sku"] for line in todo})
            # Every sku of the approval at once, in the one order all matching uses.
            await saga.lock_skus_for_matching(conn, skus)
            await _refuse_lapsed(conn, todo, skus, now)
            for line in todo:
                request_id = await saga.open_planned_request(
                    ctx,
                    outlet_id=line["outlet_id"],
                    sku=line["sku"],
                    quantity=line["quantity"],
                    source_kind=line["source_kind"],
                    source_id=line["source_id"],
                    offer_id=line["offer_id"],
                    plan_id=plan_id,
                    line_id=line["id"],
                )
                await conn.execute(
                    sa.update(rebalancing_plan_lines)
                    .where(rebalancing_plan_lines.c.id == line["id"])
                    .values(status="approved", request_id=request_id, decided_at=now)
                )
                uow.publish(
                    PlanLineApproved(**_line_event(line), request_id=request_id),
                    key=plan_id,
                    correlation_id=request_id,
                )
            await _finish(conn, plan, now)
            await uow.commit()
        elif ids is None and not chosen and plan["status"] == "proposed":
            # A plan with no lines, approved whole: decided, with nothing to open.
            await conn.execute(
                sa.update(rebalancing_plans)
                .where(rebalancing_plans.c.id == plan_id)
                .values(status="approved", updated_at=now)
            )
            await uow.commit()
        return await _plan_json(await uow.session.connection(), plan_id)


async def _refuse_lapsed(
    conn: AsyncConnection, todo: list[dict[str, Any]], skus: list[str], now: datetime
) -> None:
    """409 `line_lapsed` (nothing changed) when lines no longer hold: the projections have
    moved on since the proposal (`plans.lapsed` says how)."""
    retired = {
        r["sku"]
        for r in await saga.many(
            conn,
            sa.select(products_view.c.sku).where(
                products_view.c.sku.in_(skus), products_view.c.retired
            ),
        )
    }
    found = plans.lapsed(
        [
            (
                line["id"],
                plans.PlanLine(
                    line["sku"],
                    line["source_kind"],
                    line["source_id"],
                    line["offer_id"],
                    line["outlet_id"],
                    line["quantity"],
                    line["cost"],
                    line["cover_after_days"],
                ),
            )
            for line in todo
        ],
        await snapshot(conn, skus, now),
        retired,
    )
    if found:
        listed = "; ".join(f"{line_id}: {why}" for line_id, why in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise ApiError(
            409,
            "line_lapsed",
            f"{len(found)} line(s) no longer hold ({listed}{more}); reject them and approve "
            "the rest, or propose a new plan",
            "lines",
        )


@router.post("/plans/{plan_id}/approve")
async def approve_plan(
    plan_id: Id, request: Request, uow: UoW, body: LinesIn | None = None
) -> dict[str, Any]:
    """Approve lines (every proposed line when none are named): each opens a restock
    request with the line's source and runs through the saga. Approving an approved line
    again does nothing."""
    ids = body.lines if body else None
    for attempt in (1, 2):
        try:
            return await _approve(uow, _settings(request), plan_id, ids)
        except IntegrityError:
            # A request for the same outlet and sku took the open key meanwhile: once more.
            if attempt == 2:
                raise
        except DBAPIError as exc:
            # PostgreSQL ended a deadlock with a transaction matching these skus: once more.
            if attempt == 2 or not is_conflict(exc):
                raise
    raise AssertionError("unreachable")


@router.post("/plans/{plan_id}/reject")
async def reject_plan(plan_id: Id, uow: UoW, body: LinesIn | None = None) -> dict[str, Any]:
    """Reject lines (every proposed line when none are named); nothing moves for them."""
    ids = body.lines if body else None
    now = utcnow()
    async with uow:
        conn = await uow.session.connection()
        plan = await _plan_or_404(conn, plan_id, lock=True)
        chosen = _chosen(await _lines_of(conn, plan_id), ids)
        approved = [line["id"] for line in chosen if line["status"] == "approved"]
        if approved and ids is not None:
            raise ApiError(
                409,
                "line_approved",
                f"approved lines: {', '.join(approved[:10])}; cancel their restock requests",
                "lines",
            )
        todo = [line for line in chosen if line["status"] == "proposed"]
        if todo or (ids is None and plan["status"] == "proposed"):
            for line in todo:
                await conn.execute(
                    sa.update(rebalancing_plan_lines)
                    .where(rebalancing_plan_lines.c.id == line["id"])
                    .values(status="rejected", decided_at=now)
                )
                uow.publish(
                    PlanLineRejected(**_line_event(line)), key=plan_id, correlation_id=plan_id
                )
            await _finish(conn, plan, now)
            await uow.commit()
        return await _plan_json(await uow.session.connection(), plan_id)
