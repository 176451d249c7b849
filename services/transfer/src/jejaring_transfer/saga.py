"""The transfer saga, one unit of work at a time.

Routes, event handlers and the deadline driver call these functions inside their
UnitOfWork; nothing here commits. Every transition writes the new state, a history row and
an event (key and correlation id: the request id) in the same transaction; commands to
stock go to stock.commands keyed by the source's `outlet_id:sku`.

request: open -> matching -> fulfilled | partially_fulfilled | expired | cancelled
leg (outlet):   proposed -> reserved -> dispatched -> received
leg (supplier): proposed -> accepted -> shipped -> received
any leg:        -> rejected | declined | timed_out | released  => re-match the remainder
                -> cancelled (request cancelled or expired; reservation released)
goods already on their way when a leg was called off are taken in all the same:
                cancelled (outlet) -> dispatched; cancelled | timed_out (supplier) -> shipped
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from jejaring_shared.contracts import Envelope
from jejaring_shared.contracts.stock import ReleaseStock, ReserveStock
from jejaring_shared.contracts.transfer import (
    CandidateConsidered,
    LegAccepted,
    LegAssigned,
    LegCancelled,
    LegDeclined,
    LegDispatched,
    LegExpired,
    LegProposed,
    LegReceived,
    LegRejected,
    LegReserved,
    LegShipped,
    MatchedLeg,
    RestockRequestCancelled,
    RestockRequestExpired,
    RestockRequestFulfilled,
    RestockRequestMatched,
    RestockRequestMerged,
    RestockRequestOpened,
    RestockRequestPartiallyFulfilled,
)
from jejaring_shared.db import UnitOfWork, column_values
from jejaring_shared.errors import ApiError

from .adapters.tables import (
    legs,
    offers_view,
    outlets_view,
    products_view,
    restock_requests,
    saga_history,
    stock_view,
    suppliers_view,
)
from .config import TransferSettings
from .domain import matching as m

log = logging.getLogger(__name__)

OPEN_STATES = ("open", "matching")
LIVE_LEG_STATES = ("proposed", "reserved", "accepted", "dispatched", "shipped")
FAILED_LEG_STATES = ("rejected", "declined", "timed_out", "released", "cancelled")
IN_TRANSIT = ("dispatched", "shipped")
RELIABILITY_PRIOR = (1.6, 2.0)
"""(accepted, decided) pseudo-counts: a new supplier starts at 0.8."""

_LEG_EVENTS: dict[str, type[Any]] = {
    "reserved": LegReserved,
    "rejected": LegRejected,
    "accepted": LegAccepted,
    "declined": LegDeclined,
    "timed_out": LegExpired,
    "dispatched": LegDispatched,
    "shipped": LegShipped,
    "received": LegReceived,
    "cancelled": LegCancelled,
    "released": LegCancelled,
}


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; everything stored is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class Ctx:
    """One saga step: the unit of work, the time, the settings and the event that caused it."""

    uow: UnitOfWork
    settings: TransferSettings
    now: datetime
    cause: Envelope | None = None
    policy: m.Policy = field(default_factory=m.Policy)
    network: m.Network | None = None
    """Read once for a batch of requests opened in this unit of work (see api/intake.py);
    each match takes its allocations out, so the next sees what network_for would read."""
    network_destinations: frozenset[str] = frozenset()
    """The destinations `network` was read for (an unknown outlet is not in its outlets)."""
    batch: Batch | None = None
    """The intake's other reads for its batch: open_request looks there first."""

    async def conn(self) -> AsyncConnection:
        return await self.uow.session.connection()

    def emit(self, payload: Any, request_id: str) -> None:
        self.uow.publish(payload, key=request_id, correlation_id=request_id, cause=self.cause)

    def command(self, payload: Any, key: str, request_id: str) -> None:
        self.uow.publish(payload, key=key, correlation_id=request_id, cause=self.cause)

    async def history(
        self,
        request_id: str,
        to_state: str,
        *,
        leg_id: str | None = None,
        from_state: str | None = None,
        reason: str | None = None,
    ) -> None:
        # Written at commit, with the unit's other history rows (nothing reads them before).
        self.uow.insert_later(
            saga_history,
            _history_row(
                request_id, to_state, self.now, leg_id=leg_id, from_state=from_state, reason=reason
            ),
        )


@dataclass
class Batch:
    """The products and open requests requests are opened against: read once for an
    intake batch in its unit of work, so each request of the batch does not read them
    again (a statement is a thread hop on SQLite, several times the cost of the statement
    itself), or by `open_request` for a request alone."""

    products: dict[str, dict[str, Any] | None]
    """products_view rows by sku (None: not known) of every sku of the batch."""
    open_requests: dict[str, dict[str, Any] | None]
    """The open request (locked) by open key, of every key of the batch; kept current as
    the batch opens and merges requests."""


# -- reading --------------------------------------------------------------------------------


def open_key_of(outlet_id: str, sku: str) -> str:
    """The key that holds one open request per outlet and sku. `|` is in neither id's
    pattern, so two pairs never share it (ids may contain `:`: "a:b"+"c" and "a"+"b:c")."""
    return f"{outlet_id}|{sku}"


async def one(
    conn: AsyncConnection, stmt: Any, params: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    row = (await conn.execute(stmt, params)).mappings().first()
    return dict(row) if row is not None else None


# The statements of the hot path (a request opened, matched, its leg reserved), built once
# with bound parameters: building a statement and its cache key took about a quarter of
# the service's CPU per request. (An UPDATE's SET columns are the parameters given.)
_OPEN_BY_KEYS_PG = (
    sa.select(restock_requests)
    .where(
        restock_requests.c.open_key
        == sa.any_(sa.bindparam("b_keys", type_=postgresql.ARRAY(sa.String)))
    )
    .with_for_update()
)
_INSERT_REQUEST = sa.insert(restock_requests)
_UPDATE_REQUEST = sa.update(restock_requests).where(restock_requests.c.id == sa.bindparam("b_id"))
_LEG = sa.select(legs).where(legs.c.id == sa.bindparam("b_id"))
_UPDATE_LEG = sa.update(legs).where(legs.c.id == sa.bindparam("b_id"))
_REQUEST_OF_LEG = (
    sa.select(restock_requests)
    .where(
        restock_requests.c.id
        == sa.select(legs.c.request_id).where(legs.c.id == sa.bindparam("b_id")).scalar_subquery()
    )
    .with_for_update()
)


def set_params(table: sa.Table, changes: dict[str, Any], **where: Any) -> dict[str, Any]:
    """The parameters of a prebuilt UPDATE of `table`: `where` binds its `b_` parameters,
    `changes` (checked to be columns) are its SET columns."""
    return {**{f"b_{k}": v for k, v in where.items()}, **column_values(table, changes)}


async def many(
    conn: AsyncConnection, stmt: Any, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    return [dict(r) for r in (await conn.execute(stmt, params)).mappings()]


async def lock_request(conn: AsyncConnection, request_id: str) -> dict[str, Any] | None:
    """The request's row, locked. On PostgreSQL its sku's matching lock comes first: a saga
    step takes a sku's lock before a request's row, never the other way round, so a step
    that re-matches does not deadlock with a match that moves the request. (A consumer
    batch applies several steps in one transaction and can still hold one request's row
    when it asks for another sku: PostgreSQL then ends the cycle, and the batch is applied
    message by message.)"""
    await lock_sku_of(conn, restock_requests, request_id)
    return await one(
        conn,
        sa.select(restock_requests).where(restock_requests.c.id == request_id).with_for_update(),
    )


async def get_leg(conn: AsyncConnection, leg_id: str) -> dict[str, Any] | None:
    return await one(conn, _LEG, {"b_id": leg_id})


async def legs_of(conn: AsyncConnection, request_id: str) -> list[dict[str, Any]]:
    return await many(
        conn,
        sa.select(legs)
        .where(legs.c.request_id == request_id)
        .order_by(legs.c.created_at, legs.c.id),
    )


def remainder(request: dict[str, Any], request_legs: Sequence[dict[str, Any]]) -> int:
    """Units of the request no live or finished leg is taking care of."""
    held = sum(
        int(leg["quantity"])
        for leg in request_legs
        if leg["state"] in LIVE_LEG_STATES or leg["state"] == "received"
    )
    return max(0, int(request["quantity"]) - held)


def product_from(row: Any, sku: str) -> m.Product:
    if row is None:
        return m.Product(sku=sku)
    return m.Product(
        sku=sku,
        case_pack=row["case_pack"],
        min_transfer_qty=row["min_transfer_qty"],
        pareto_class=row["pareto_class"],
        perishable=row["perishable"],
    )


async def read_products(conn: AsyncConnection, skus: Sequence[str]) -> dict[str, Any]:
    """products_view rows of `skus` by sku, None for a sku not known; one statement."""
    rows = await many(conn, sa.select(products_view).where(products_view.c.sku.in_(skus)))
    return {sku: None for sku in skus} | {r["sku"]: r for r in rows}


def products_from(rows: dict[str, Any]) -> dict[str, m.Product]:
    """`read_products`' rows as matching's products (a sku not known gets the defaults)."""
    return {sku: product_from(row, sku) for sku, row in rows.items()}


async def read_open_requests(conn: AsyncConnection, open_keys: Sequence[str]) -> dict[str, Any]:
    """The open request (locked) of each of `open_keys`, None where there is none; one
    statement. On PostgreSQL the skus' matching locks must be held already (see
    lock_request): `network_for` takes them."""
    keys = sorted(set(open_keys))
    if conn.dialect.name == "postgresql":
        # One array parameter: an IN list's text changes with the batch's size, and asyncpg
        # prepares (a round trip) every statement text new to its connection.
        rows = await many(conn, _OPEN_BY_KEYS_PG, {"b_keys": keys})
    else:
        rows = await many(
            conn,
            sa.select(restock_requests)
            .where(restock_requests.c.open_key.in_(keys))
            .with_for_update(),
        )
    found = {r["open_key"]: r for r in rows}
    return {key: found.get(key) for key in open_keys}


# Units live legs hold, per source: a proposed outlet leg's reservation is not in the stock
# projection yet; a supplier leg holds part of its offer until it fails. Correlated so that
# each is an index lookup on ix_legs_source (source_id, sku, state), not a scan of all legs.
_PENDING_AT_DONOR = (
    sa.select(sa.func.coalesce(sa.func.sum(legs.c.quantity), 0))
    .where(
        legs.c.source_id == stock_view.c.outlet_id,
        legs.c.sku == stock_view.c.sku,
        legs.c.state == "proposed",
        legs.c.source_kind == "outlet",
    )
    .scalar_subquery()
)
_HELD_OF_OFFER = (
    sa.select(sa.func.coalesce(sa.func.sum(legs.c.quantity), 0))
    .where(
        legs.c.source_id == offers_view.c.supplier_id,
        legs.c.sku == offers_view.c.sku,
        legs.c.state.in_(("proposed", "accepted", "shipped", "received")),
        legs.c.offer_id == offers_view.c.offer_id,
        legs.c.source_kind == "supplier",
    )
    .scalar_subquery()
)


# PostgreSQL: matching a sku is serialized across transactions (the intake's batches, the
# consumers' re-matches, the deadline driver, other replicas). Under READ COMMITTED two
# matches of one sku would otherwise both read the same spare stock and offer quantity and
# both hand it out (stock refuses a donor's excess, but nothing refuses a supplier offer's).
# With the sku's lock taken before the read, each reads what the previous one committed.
# Transaction-scoped advisory locks, in hash order so two transactions of overlapping skus
# take them in one order; (space, hash) keys never meet the relay's one-key leader lock.
# SQLite needs none: a writing unit of work holds the process's write lock from its start.
_MATCH_LOCK_SPACE = 0x4A4A4D31
_LOCK_SKUS = sa.text(
    "SELECT count(pg_advisory_xact_lock(:space, k)) FROM "
    "(SELECT DISTINCT hashtext(s) AS k FROM unnest(CAST(:skus AS text[])) AS s ORDER BY k) AS q"
)


async def lock_skus_for_matching(conn: AsyncConnection, skus: Sequence[str]) -> None:
    """Wait for any other transaction matching these skus to end (PostgreSQL)."""
    if conn.dialect.name == "postgresql" and skus:
        await conn.execute(_LOCK_SKUS, {"space": _MATCH_LOCK_SPACE, "skus": sorted(set(skus))})


async def lock_sku_of(conn: AsyncConnection, table: sa.Table, row_id: str) -> None:
    """The same lock for the sku of a request or leg (`table`), found and taken in one
    statement (PostgreSQL); nothing when the row does not exist."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.select(
                sa.func.pg_advisory_xact_lock(_MATCH_LOCK_SPACE, sa.func.hashtext(table.c.sku))
            ).where(table.c.id == row_id)
        )


async def network_for(
    conn: AsyncConnection,
    skus: Sequence[str],
    now: datetime,
    *,
    destinations: Sequence[str] | None = None,
    products: dict[str, m.Product] | None = None,
) -> m.Network:
    """What the projections know about these skus, with what live legs already hold taken
    out (a proposed reservation is not in the stock projection yet; a supplier leg holds
    part of its offer until it fails).

    Only what matching needs is read, in three indexed queries: the stock rows of these
    skus (with what proposed legs hold at each donor), the outlets holding them plus
    `destinations` (every outlet when None), and the active offers with their suppliers.
    `products` saves the products query when the caller has them already.

    Every caller matches what it reads, so the skus are locked for matching first."""
    skus = list(skus)
    await lock_skus_for_matching(conn, skus)
    stock = {
        (r["outlet_id"], r["sku"]): m.Stock(
            r["outlet_id"], r["sku"], r["available"] - r["pending"], r["reorder_point"]
        )
        for r in await many(
            conn,
            sa.select(
                stock_view.c.outlet_id,
                stock_view.c.sku,
                stock_view.c.available,
                stock_view.c.reorder_point,
                _PENDING_AT_DONOR.label("pending"),
            ).where(stock_view.c.sku.in_(skus)),
        )
    }
    outlet_query = sa.select(outlets_view)
    if destinations is not None:
        holders = {outlet_id for outlet_id, _sku in stock}
        outlet_query = outlet_query.where(
            outlets_view.c.outlet_id.in_(sorted(holders | set(destinations)))
        )
    outlets = {
        r["outlet_id"]: m.Outlet(
            r["outlet_id"], r["community"], r["region"], r["lat"], r["lon"], r["status"]
        )
        for r in await many(conn, outlet_query)
    }
    offers = []
    for r in await many(
        conn,
        sa.select(
            offers_view,
            _HELD_OF_OFFER.label("held"),
            suppliers_view.c.supplier_id.label("known_supplier"),
            suppliers_view.c.community.label("supplier_community"),
            suppliers_view.c.accepted,
            suppliers_view.c.declined,
            suppliers_view.c.timed_out,
        )
        .select_from(
            offers_view.outerjoin(
                suppliers_view, suppliers_view.c.supplier_id == offers_view.c.supplier_id
            )
        )
        .where(offers_view.c.sku.in_(skus), offers_view.c.status == "active"),
    ):
        left = r["quantity"] - r["held"]
        if left <= 0:
            continue
        sup = r if r["known_supplier"] is not None else None
        offers.append(
            m.Offer(
                r["offer_id"],
                r["supplier_id"],
                r["sku"],
                left,
                r["unit_price"],
                r["lead_time_hours"],
                r["min_order"],
                reliability=reliability(sup),
                community=sup["supplier_community"] if sup else None,
                valid_until=aware(r["valid_until"]),
            )
        )
    if products is None or any(sku not in products for sku in skus):
        products = products_from(await read_products(conn, skus))
    return m.Network(outlets=outlets, stock=stock, offers=offers, products=dict(products))


def reliability(sup: Any) -> float:
    """Accepted over decided assignments, with a prior of 0.8 worth two assignments."""
    prior_ok, prior_n = RELIABILITY_PRIOR
    if sup is None:
        return prior_ok / prior_n
    decided = sup["accepted"] + sup["declined"] + sup["timed_out"]
    return float((sup["accepted"] + prior_ok) / (decided + prior_n))


# -- requests -------------------------------------------------------------------------------


@dataclass
class Opened:
    request_id: str
    merged: bool
    quantity: int
    status: str


async def open_request(
    ctx: Ctx,
    *,
    outlet_id: str,
    sku: str,
    quantity: int,
    needed_by: datetime | None,
    origin: str,
) -> Opened:
    """Open a request, or merge it into the open one of the same outlet and sku; then match
    what is not yet taken care of."""
    conn = await ctx.conn()
    open_key = open_key_of(outlet_id, sku)
    batch = ctx.batch
    if batch is None or open_key not in batch.open_requests:
        # Alone (not in an intake batch): the batch's reads for its one sku and key, the
        # sku's matching lock before the request's row (see lock_request).
        products = await read_products(conn, [sku])
        await lock_skus_for_matching(conn, [sku])
        batch = Batch(products, await read_open_requests(conn, [open_key]))
    product_row = batch.products[sku]
    if product_row is not None and product_row["retired"]:
        raise ApiError(422, "product_retired", f"{sku} is retired", "sku")
    product = product_from(product_row, sku)
    current = batch.open_requests[open_key]  # read under the sku's matching lock
    expires_at = aware(current["expires_at"]) if current is not None else None
    if current is not None and expires_at is not None and expires_at <= ctx.now:
        # Past its expiry, only not closed by the driver yet: merged into it, the new
        # demand would never be matched (an expiring request gets no new legs) and would
        # be lost with it. It is expired now, and a new request opened.
        await stop_request(ctx, current["id"], "expired", "expired")
        batch.open_requests[open_key] = current = None
    if current is not None:
        total = m.round_request(current["requested_quantity"] + quantity, product)
        added = max(0, total - current["quantity"])
        changes: dict[str, Any] = {
            "requested_quantity": current["requested_quantity"] + quantity,
            "quantity": max(total, current["quantity"]),
            "merged": current["merged"] + 1,
            "updated_at": ctx.now,
        }
        if needed_by is not None and (
            current["needed_by"] is None or needed_by < aware(current["needed_by"])  # type: ignore[operator]
        ):
            changes["needed_by"] = needed_by
            # Sooner needed, sooner expired (its reservations released with it).
            expires_at = needed_by + timedelta(seconds=ctx.settings.expiry_grace_s)
            if expires_at < aware(current["expires_at"]):  # type: ignore[operator]
                changes["expires_at"] = expires_at
        await conn.execute(_UPDATE_REQUEST, set_params(restock_requests, changes, id=current["id"]))
        current.update(changes)
        await ctx.history(
            current["id"],
            current["status"],
            from_state=current["status"],
            reason=f"merged +{quantity}",
        )
        ctx.emit(
            RestockRequestMerged(
                request_id=current["id"],
                outlet_id=outlet_id,
                sku=sku,
                added_quantity=max(added, 1) if added else quantity,
                quantity=current["quantity"],
            ),
            current["id"],
        )
        if added:
            await match_request(ctx, current, announce=True, product=product)
        return Opened(current["id"], True, current["quantity"], current["status"])

    request_id = new_id("rq")
    rounded = m.round_request(quantity, product)
    if needed_by is not None:
        expires_at = needed_by + timedelta(seconds=ctx.settings.expiry_grace_s)
    else:
        expires_at = ctx.now + timedelta(seconds=ctx.settings.request_ttl_s)
    row = {
        "id": request_id,
        "outlet_id": outlet_id,
        "sku": sku,
        "requested_quantity": quantity,
        "quantity": rounded,
        "needed_by": needed_by,
        "expires_at": expires_at,
        "status": "open",
        "origin": origin,
        "open_key": open_key,
        "received": 0,
        "merged": 0,
        "attempts": 0,
        "excluded": [],
        "explanation": [],
        "created_at": ctx.now,
        "updated_at": ctx.now,
    }
    batch.open_requests[open_key] = row  # a later request of the batch merges into it
    reason = f"{origin}; requested {quantity}"
    if rounded != quantity:
        reason += f", rounded to {rounded} (case pack {product.case_pack}, "
        reason += f"minimum transfer {product.min_transfer_qty})"
    await ctx.history(request_id, "open", reason=reason)
    ctx.emit(
        RestockRequestOpened(
            request_id=request_id,
            outlet_id=outlet_id,
            sku=sku,
            quantity=rounded,
            needed_by=needed_by,
        ),
        request_id,
    )
    # A new request has no legs yet and at least one case pack to match: it is matched at
    # once and written with its first match (one INSERT, not an insert and an update).
    result = await _match(ctx, row, rounded, product)
    await apply_match(ctx, row, result, announce=True, new=True)
    return Opened(request_id, False, rounded, str(row["status"]))


async def match_request(
    ctx: Ctx,
    request: dict[str, Any],
    *,
    announce: bool,
    product: m.Product | None = None,
    request_legs: Sequence[dict[str, Any]] | None = None,
) -> int:
    """Match the request's remainder now; returns the units given to new legs.
    `product` and `request_legs` save their queries when the caller has them already."""
    conn = await ctx.conn()
    if request["status"] not in OPEN_STATES:
        return 0
    expires_at = aware(request["expires_at"])
    if expires_at is not None and expires_at <= ctx.now:
        return 0  # the driver is about to expire it: no new reservations or assignments
    if request_legs is None:
        request_legs = await legs_of(conn, request["id"])
    rest = remainder(request, request_legs)
    if rest <= 0:
        return 0
    result = await _match(ctx, request, rest, product)
    return await apply_match(ctx, request, result, announce=announce)


async def _match(
    ctx: Ctx, request: dict[str, Any], rest: int, product: m.Product | None
) -> m.Match:
    """The match of `rest` units of the request (from the batch's network when it covers
    the request, else read afresh), taken out of that network."""
    conn = await ctx.conn()
    network = ctx.network
    if network is None or not _covers(ctx, request):
        if network is not None:
            # A match outside the batch's read (it covers every request of the batch, so
            # only by an odd merge) would leave it stale: every later match reads afresh.
            network.products.clear()
        network = await network_for(
            conn,
            [request["sku"]],
            ctx.now,
            destinations=[request["outlet_id"]],
            products=None if product is None else {request["sku"]: product},
        )
    need = m.Need(
        request["id"],
        request["outlet_id"],
        request["sku"],
        rest,
        aware(request["needed_by"]),
        aware(request["created_at"]),
    )
    result = m.match(need, network, ctx.now, ctx.policy, frozenset(request["excluded"]))
    if network is ctx.network:
        m.consume(network, result)
        # As network_for reads them: an offer with nothing left is not a candidate.
        network.offers = [o for o in network.offers if o.quantity > 0]
    return result


def _covers(ctx: Ctx, request: dict[str, Any]) -> bool:
    """Was the batch's network read for this request's sku and destination?"""
    return (
        ctx.network is not None
        and request["sku"] in ctx.network.products
        and request["outlet_id"] in ctx.network_destinations
    )


async def apply_match(
    ctx: Ctx, request: dict[str, Any], result: m.Match, *, announce: bool, new: bool = False
) -> int:
    """Create the legs of a match (commands and assignments), record its explanation.
    `new`: the request is not written yet; it is inserted with the match."""
    if not result.allocations and not announce:
        return 0
    conn = await ctx.conn()
    rid = request["id"]
    attempt = request["attempts"] + 1
    explanation = {
        "attempt": attempt,
        "at": ctx.now.isoformat(),
        "excluded_sources": list(request["excluded"]),
        **result.explanation(),
    }
    made: list[MatchedLeg] = []
    leg_events: list[Any] = []  # emitted after the match that explains them
    commands: list[tuple[Any, str]] = []
    # Legs are written with one statement (fewer round trips while the transaction holds
    # SQLite's write lock); history rows are queued on the unit of work.
    leg_rows: list[dict[str, Any]] = []
    for a in result.allocations:
        leg_id = new_id("lg")
        leg = {
            "id": leg_id,
            "request_id": rid,
            "source_kind": a.kind,
            "source_id": a.source_id,
            "offer_id": a.offer_id,
            "outlet_id": request["outlet_id"],
            "sku": request["sku"],
            "quantity": a.quantity,
            "unit_price": a.unit_price,
            "state": "proposed",
            "terms": a.terms.as_dict(),
            "accept_by": None,
            "reservation_expires_at": None,
            "created_at": ctx.now,
            "updated_at": ctx.now,
        }
        leg_rows.append(leg)
        if a.kind == "outlet":
            expires = aware(request["expires_at"])
            assert expires is not None
            ttl = max(
                60, int((expires - ctx.now).total_seconds() + ctx.settings.reservation_margin_s)
            )
            leg["reservation_expires_at"] = ctx.now + timedelta(seconds=ttl)
            commands.append(
                (
                    ReserveStock(
                        outlet_id=a.source_id,
                        sku=request["sku"],
                        leg_id=leg_id,
                        quantity=a.quantity,
                        expires_in_s=ttl,
                    ),
                    f"{a.source_id}:{request['sku']}",
                )
            )
            leg_events.append(
                LegProposed(
                    **_leg_fields(leg, "proposed", None), expires_at=leg["reservation_expires_at"]
                )
            )
        else:
            leg["accept_by"] = ctx.now + timedelta(seconds=ctx.settings.accept_timeout_s)
            leg_events.append(
                LegAssigned(
                    leg_id=leg_id,
                    request_id=rid,
                    supplier_id=a.source_id,
                    outlet_id=request["outlet_id"],
                    sku=request["sku"],
                    quantity=a.quantity,
                    unit_price=a.unit_price,
                    accept_by=leg["accept_by"],
                    ship_by=ctx.now + timedelta(hours=a.lead_time_hours),
                )
            )
            await bump_supplier(ctx, a.source_id, "assigned")
        ctx.uow.insert_later(
            saga_history,
            _history_row(rid, "proposed", ctx.now, leg_id=leg_id, reason=f"{a.kind} {a.source_id}"),
        )
        made.append(
            MatchedLeg(
                leg_id=leg_id, source_kind=a.kind, source_id=a.source_id, quantity=a.quantity
            )
        )
    status = "matching"
    history = list(request["explanation"] or [])
    history.append(explanation)
    changes = {"status": status, "attempts": attempt, "explanation": history, "updated_at": ctx.now}
    if new:  # before its legs, which refer to it
        await conn.execute(_INSERT_REQUEST, {**request, **changes})
    else:
        await conn.execute(_UPDATE_REQUEST, set_params(restock_requests, changes, id=rid))
    if leg_rows:
        await conn.execute(sa.insert(legs), leg_rows)
    if request["status"] != status:
        ctx.uow.insert_later(
            saga_history,
            _history_row(
                rid, status, ctx.now, from_state=request["status"], reason=result.strategy
            ),
        )
    request.update(status=status, attempts=attempt, explanation=history)
    ctx.emit(
        RestockRequestMatched(
            request_id=rid,
            outlet_id=request["outlet_id"],
            sku=request["sku"],
            need=result.need.quantity,
            strategy=result.strategy,
            legs=made,
            unfilled=result.unfilled,
            # The explanation stored above, not built a second time.
            candidates=[CandidateConsidered(**c) for c in explanation["candidates"]],
            attempt=attempt,
            excluded_sources=list(request["excluded"]),
        ),
        rid,
    )
    for event in leg_events:
        ctx.emit(event, rid)
    for command, key in commands:
        ctx.command(command, key, rid)
    return sum(a.quantity for a in result.allocations)


def _history_row(
    request_id: str,
    to_state: str,
    at: datetime,
    *,
    leg_id: str | None = None,
    from_state: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A saga_history row, queued on the unit of work (see Ctx.history)."""
    return {
        "request_id": request_id,
        "leg_id": leg_id,
        "from_state": from_state,
        "to_state": to_state,
        "reason": (reason or None) and reason[:500],
        "at": at,
    }


def _leg_fields(leg: dict[str, Any], state: str, reason: str | None) -> dict[str, Any]:
    return {
        "leg_id": leg["id"],
        "request_id": leg["request_id"],
        "source_kind": leg["source_kind"],
        "source_id": leg["source_id"],
        "outlet_id": leg["outlet_id"],
        "sku": leg["sku"],
        "quantity": leg["quantity"],
        "state": state,
        "reason": reason[:500] if reason else None,
    }


async def bump_supplier(ctx: Ctx, supplier_id: str, counter: str) -> None:
    conn = await ctx.conn()
    col = suppliers_view.c[counter]
    done = await conn.execute(
        sa.update(suppliers_view)
        .where(suppliers_view.c.supplier_id == supplier_id)
        .values({counter: col + 1, "updated_at": ctx.now})
    )
    if done.rowcount == 0:
        counts = dict.fromkeys(("assigned", "accepted", "declined", "timed_out", "shipped"), 0)
        counts[counter] = 1
        await conn.execute(
            sa.insert(suppliers_view).values(
                supplier_id=supplier_id, community=None, updated_at=ctx.now, **counts
            )
        )


# -- leg transitions ------------------------------------------------------------------------


async def move_leg(
    ctx: Ctx,
    leg_id: str,
    to_state: str,
    *,
    allowed_from: Sequence[str],
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
    lock_sku: bool = True,
    source: tuple[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Move a leg (with its request locked) if it is in one of `allowed_from`; record the
    history and the event. Returns (leg, request) after the move, or None if it did not
    apply (unknown leg, or already past that state: a redelivery or a late answer; or,
    with `source` (kind, id), a leg of another source).
    `lock_sku=False`: the caller takes no other lock after this one (reserved, dispatched),
    so it need not wait for the sku's matching lock first."""
    conn = await ctx.conn()
    if lock_sku:  # the sku's lock before the request's row
        await lock_sku_of(conn, legs, leg_id)
    # Lock the leg's request first (found through the leg in the same statement), then
    # read the leg under that lock.
    request = await one(conn, _REQUEST_OF_LEG, {"b_id": leg_id})
    if request is None:
        return None
    leg = await get_leg(conn, leg_id)
    if leg is None or request is None or leg["state"] not in allowed_from:
        return None
    if source is not None and (leg["source_kind"], leg["source_id"]) != source:
        return None
    changes = {"state": to_state, "updated_at": ctx.now, **(extra or {})}
    if reason is not None:
        changes["reason"] = reason[:500]
    await conn.execute(_UPDATE_LEG, set_params(legs, changes, id=leg_id))
    before = leg["state"]
    leg.update(changes)
    await ctx.history(leg["request_id"], to_state, leg_id=leg_id, from_state=before, reason=reason)
    fields = _leg_fields(leg, to_state, reason)
    if to_state == "received":
        ctx.emit(LegReceived(**fields, sent_quantity=leg.get("sent_quantity")), leg["request_id"])
    else:
        ctx.emit(_LEG_EVENTS[to_state](**fields), leg["request_id"])
    return leg, request


async def leg_failed(
    ctx: Ctx, leg_id: str, to_state: str, *, allowed_from: Sequence[str], reason: str
) -> bool:
    """A source failed a leg: exclude it from this request and re-match the remainder."""
    moved = await move_leg(ctx, leg_id, to_state, allowed_from=allowed_from, reason=reason)
    if moved is None:
        return False
    leg, request = moved
    source = m.source_key(leg["source_kind"], leg["source_id"])
    excluded = list(request["excluded"])
    if source not in excluded:
        excluded.append(source)
        await (await ctx.conn()).execute(
            sa.update(restock_requests)
            .where(restock_requests.c.id == request["id"])
            .values(excluded=excluded)
        )
        request["excluded"] = excluded
    if leg["source_kind"] == "supplier" and to_state in ("declined", "timed_out"):
        await bump_supplier(ctx, leg["source_id"], to_state)
    await match_request(ctx, request, announce=True)
    await settle(ctx, request["id"])
    return True


async def settle(ctx: Ctx, request_id: str) -> None:
    """Close the request when nothing is left to do: every leg finished and no remainder."""
    conn = await ctx.conn()
    request = await lock_request(conn, request_id)
    if request is None or request["status"] not in OPEN_STATES:
        return
    request_legs = await legs_of(conn, request_id)
    if any(leg["state"] in LIVE_LEG_STATES for leg in request_legs):
        return
    rest = remainder(request, request_legs)
    reason = None
    if rest > 0:
        sku = request["sku"]
        product = product_from((await read_products(conn, [sku]))[sku], sku)
        if rest >= m.round_request(1, product):
            return  # waits for a source (re-matched by the driver) until it expires
        # Less than any leg may carry (a split of 18 in packs of 6 with a minimum transfer
        # of 12 leaves 6): no source can ever send it, so the request closes now rather
        # than wait for its expiry, holding the outlet's open request all that time.
        reason = f"the {rest} left are less than the smallest transfer of {sku}"
    received = sum(leg["received_quantity"] or 0 for leg in request_legs)
    status = "fulfilled" if received >= request["quantity"] else "partially_fulfilled"
    await close(ctx, request, status, received=received, reason=reason)


async def close(
    ctx: Ctx, request: dict[str, Any], status: str, *, received: int, reason: str | None = None
) -> None:
    await (await ctx.conn()).execute(
        sa.update(restock_requests)
        .where(restock_requests.c.id == request["id"])
        .values(status=status, open_key=None, closed_at=ctx.now, updated_at=ctx.now)
    )
    await ctx.history(request["id"], status, from_state=request["status"], reason=reason)
    cls = {
        "fulfilled": RestockRequestFulfilled,
        "partially_fulfilled": RestockRequestPartiallyFulfilled,
        "expired": RestockRequestExpired,
        "cancelled": RestockRequestCancelled,
    }[status]
    ctx.emit(
        cls(
            request_id=request["id"],
            outlet_id=request["outlet_id"],
            sku=request["sku"],
            quantity=request["quantity"],
            received=received,
            reason=reason,
        ),
        request["id"],
    )


async def stop_request(ctx: Ctx, request_id: str, status: str, reason: str) -> dict[str, Any]:
    """Cancel or expire: release every reservation not dispatched, call off every leg not
    yet on its way. Legs in transit may still be received."""
    conn = await ctx.conn()
    request = await lock_request(conn, request_id)
    if request is None:
        raise ApiError(404, "request_not_found", f"no restock request {request_id!r}", "id")
    if request["status"] not in OPEN_STATES:
        raise ApiError(
            409, "request_closed", f"the request is already {request['status']}", "status"
        )
    for leg in await legs_of(conn, request_id):
        if leg["state"] not in ("proposed", "reserved", "accepted"):
            continue
        await move_leg(
            ctx,
            leg["id"],
            "cancelled",
            allowed_from=("proposed", "reserved", "accepted"),
            reason=reason,
        )
        if leg["source_kind"] == "outlet":
            ctx.command(
                ReleaseStock(
                    outlet_id=leg["source_id"], sku=leg["sku"], leg_id=leg["id"], reason=reason
                ),
                f"{leg['source_id']}:{leg['sku']}",
                request_id,
            )
    received = sum(leg["received_quantity"] or 0 for leg in await legs_of(conn, request_id))
    await close(ctx, request, status, received=received, reason=reason)
    request["status"] = status
    return request


# -- driven by stock events ------------------------------------------------------------------


async def on_reserved(ctx: Ctx, leg_id: str) -> None:
    moved = await move_leg(ctx, leg_id, "reserved", allowed_from=("proposed",), lock_sku=False)
    if moved is None:
        return
    leg, request = moved
    if leg["source_kind"] == "outlet":
        # The leg no longer counts as pending at its donor, and the donor's
        # stock.level_changed may be applied in a later transaction: until then the
        # projection takes the reservation off what the donor can give, or a match in
        # between would see the units twice and take the donor below its reorder point.
        # The level_changed that follows sets the absolute figures again.
        await (await ctx.conn()).execute(
            sa.update(stock_view)
            .where(stock_view.c.outlet_id == leg["source_id"], stock_view.c.sku == leg["sku"])
            .values(
                reserved=stock_view.c.reserved + leg["quantity"],
                available=stock_view.c.available - leg["quantity"],
            )
        )
    if request["first_reserved_at"] is None:
        await (await ctx.conn()).execute(
            _UPDATE_REQUEST,
            set_params(restock_requests, {"first_reserved_at": ctx.now}, id=request["id"]),
        )


async def on_released(ctx: Ctx, leg_id: str, reason: str) -> None:
    """Stock released a reservation we did not call off (it expired): re-match."""
    conn = await ctx.conn()
    leg = await get_leg(conn, leg_id)
    if leg is None:
        return
    if leg["state"] == "cancelled":
        await ctx.history(
            leg["request_id"],
            "cancelled",
            leg_id=leg_id,
            from_state="cancelled",
            reason=f"stock released: {reason}",
        )
        return
    await leg_failed(ctx, leg_id, "released", allowed_from=("reserved",), reason=reason)


async def on_dispatched(ctx: Ctx, leg_id: str, quantity: int) -> None:
    """Stock sent the units. A leg cancelled while its dispatch was on its way (the
    request cancelled or expired after the source asked to dispatch) is in transit all
    the same: its release reached stock after the dispatch and found nothing to release,
    so the leg goes on to be received rather than leave the units on no one's books."""
    await move_leg(
        ctx,
        leg_id,
        "dispatched",
        allowed_from=("reserved", "cancelled"),
        extra={"sent_quantity": quantity},
        lock_sku=False,
    )


async def on_received(ctx: Ctx, leg_id: str, quantity: int, reason: str | None) -> None:
    moved = await move_leg(
        ctx,
        leg_id,
        "received",
        allowed_from=("dispatched", "shipped"),
        reason=reason,
        extra={"received_quantity": quantity},
    )
    if moved is None:
        return
    _leg, request = moved
    await (await ctx.conn()).execute(
        sa.update(restock_requests)
        .where(restock_requests.c.id == request["id"])
        .values(received=restock_requests.c.received + quantity, updated_at=ctx.now)
    )
    await settle(ctx, request["id"])


# -- the deadline driver ---------------------------------------------------------------------


async def due_legs(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[str]:
    return [
        r["id"]
        for r in await many(
            conn,
            sa.select(legs.c.id)
            .where(
                legs.c.state == "proposed", legs.c.accept_by.is_not(None), legs.c.accept_by <= now
            )
            .order_by(legs.c.accept_by)  # the longest overdue first
            .limit(limit),
        )
    ]


async def due_requests(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[str]:
    return [
        r["id"]
        for r in await many(
            conn,
            sa.select(restock_requests.c.id)
            .where(restock_requests.c.status.in_(OPEN_STATES), restock_requests.c.expires_at <= now)
            .order_by(restock_requests.c.expires_at)
            .limit(limit),
        )
    ]


@dataclass
class RematchWindow:
    """Where the driver's re-match rounds have got to in the waiting requests (oldest
    first). Each round reads the next `limit` after `after`, and starts again from the
    oldest once a round reads fewer: waiting requests no source can fill yet (the filter
    below is looser than matching) would otherwise fill every round's window for good, and
    newer requests behind them never be looked at until those expire."""

    after: tuple[Any, str] | None = None  # (created_at as stored, id) of the last read


async def rematch_waiting(ctx: Ctx, limit: int = 500, window: RematchWindow | None = None) -> int:
    """Requests waiting for a source, matched together: the scarce stock goes to at-risk
    outlets and pareto A items first. Returns the units given to new legs."""
    conn = await ctx.conn()
    window = window if window is not None else RematchWindow()
    held = (
        sa.select(sa.func.coalesce(sa.func.sum(legs.c.quantity), 0))
        .where(
            legs.c.request_id == restock_requests.c.id,
            legs.c.state.in_((*LIVE_LEG_STATES, "received")),
        )
        .scalar_subquery()
    )
    # Only skus someone could give now: requests for skus nobody holds above their reorder
    # point or offers would otherwise fill the window, oldest first, and keep newer ones
    # whose source just appeared from ever being looked at until they expire.
    givable = sa.or_(
        sa.exists().where(
            stock_view.c.sku == restock_requests.c.sku,
            stock_view.c.outlet_id != restock_requests.c.outlet_id,
            stock_view.c.available > stock_view.c.reorder_point,
        ),
        sa.exists().where(
            offers_view.c.sku == restock_requests.c.sku,
            offers_view.c.status == "active",
            sa.or_(offers_view.c.valid_until.is_(None), offers_view.c.valid_until > ctx.now),
        ),
    )
    waiting = (
        sa.select(restock_requests, held.label("held"))
        .where(
            restock_requests.c.status.in_(OPEN_STATES),
            restock_requests.c.expires_at > ctx.now,
            restock_requests.c.quantity > held,
            givable,
        )
        .order_by(restock_requests.c.created_at, restock_requests.c.id)
        .limit(limit)
    )
    rows = []
    if window.after is not None:
        at, last_id = window.after
        rows = await many(
            conn,
            waiting.where(
                sa.or_(
                    restock_requests.c.created_at > at,
                    sa.and_(restock_requests.c.created_at == at, restock_requests.c.id > last_id),
                )
            ),
        )
    if not rows:  # at the end (or never started): from the oldest again, this round
        rows = await many(conn, waiting)
    window.after = (rows[-1]["created_at"], rows[-1]["id"]) if len(rows) == limit else None
    needs: list[m.Need] = []
    by_id: dict[str, dict[str, Any]] = {}
    for r in rows:
        rest = r["quantity"] - r.pop("held")
        by_id[r["id"]] = r
        needs.append(
            m.Need(
                r["id"],
                r["outlet_id"],
                r["sku"],
                rest,
                aware(r["needed_by"]),
                aware(r["created_at"]),
            )
        )
    if not needs:
        return 0
    network = await network_for(
        conn,
        sorted({n.sku for n in needs}),
        ctx.now,
        destinations=sorted({n.outlet_id for n in needs}),
    )
    # Up to `limit` needs over every candidate: CPU work, kept off the event loop.
    results = await asyncio.to_thread(
        m.allocate,
        needs,
        network,
        ctx.now,
        ctx.policy,
        {rid: frozenset(r["excluded"]) for rid, r in by_id.items()},
    )
    given = 0
    for result in results:
        if result.allocations:
            request = await lock_request(conn, result.need.request_id)
            # Read before the skus' locks were held: a match that committed meanwhile may
            # have covered it, or a source may have failed it since. Then it waits for the
            # next round rather than get legs twice or go back to that source.
            if (
                request is not None
                and request["status"] in OPEN_STATES
                and not any(
                    m.source_key(a.kind, a.source_id) in request["excluded"]
                    for a in result.allocations
                )
                and remainder(request, await legs_of(conn, request["id"])) >= result.need.quantity
            ):
                given += await apply_match(ctx, request, result, announce=False)
    return given


# -- rebalancing plans -----------------------------------------------------------------------


async def open_planned_request(
    ctx: Ctx,
    *,
    outlet_id: str,
    sku: str,
    quantity: int,
    source_kind: str,
    source_id: str,
    offer_id: str | None,
    plan_id: str,
    line_id: str,
) -> str:
    """An approved rebalancing plan line: a restock request (origin "rebalancing") whose
    first match may use only the line's source. From there it is an ordinary request: a
    rejection, decline or expiry re-matches the remainder by the normal matching.

    It takes the outlet and sku's open key when that is free, so auto-restock does not
    open another request beside it; when another request is already open, it runs next
    to it instead of being merged (its source is fixed, the other's is not)."""
    conn = await ctx.conn()
    open_key = open_key_of(outlet_id, sku)
    taken = await one(
        conn, sa.select(restock_requests.c.id).where(restock_requests.c.open_key == open_key)
    )
    request_id = new_id("rq")
    row: dict[str, Any] = {
        "id": request_id,
        "outlet_id": outlet_id,
        "sku": sku,
        "requested_quantity": quantity,
        "quantity": quantity,  # the planner made it whole case packs, at least the minimum
        "needed_by": None,
        "expires_at": ctx.now + timedelta(seconds=ctx.settings.request_ttl_s),
        "status": "open",
        "origin": "rebalancing",
        "open_key": None if taken else open_key,
        "received": 0,
        "merged": 0,
        "attempts": 0,
        "excluded": [],
        "explanation": [],
        "created_at": ctx.now,
        "updated_at": ctx.now,
    }
    await conn.execute(sa.insert(restock_requests).values(**row))
    await ctx.history(
        request_id,
        "open",
        reason=f"rebalancing plan {plan_id} line {line_id}; source {source_kind}:{source_id}",
    )
    ctx.emit(
        RestockRequestOpened(
            request_id=request_id, outlet_id=outlet_id, sku=sku, quantity=quantity
        ),
        request_id,
    )
    # Only the sink and the sku's holders: the line's source is one of them.
    network = await network_for(conn, [sku], ctx.now, destinations=[outlet_id])
    fixed = m.Network(
        outlets=network.outlets,
        stock={
            k: s for k, s in network.stock.items() if source_kind == "outlet" and k[0] == source_id
        },
        offers=[
            o
            for o in network.offers
            if source_kind == "supplier"
            and (o.offer_id == offer_id if offer_id else o.supplier_id == source_id)
        ],
        products=network.products,
    )
    need = m.Need(request_id, outlet_id, sku, quantity, None, ctx.now)
    await apply_match(ctx, row, m.match(need, fixed, ctx.now, ctx.policy), announce=True)
    return request_id
