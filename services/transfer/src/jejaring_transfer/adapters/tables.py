"""Tables owned by this service; imported by migrations/env.py for autogenerate.

Transfer's own tables live in `TRANSFER` (plain SQLAlchemy Core), not in the process-wide
SQLModel metadata: every service is importable in one process (tests, tools), and another
service may own a table of the same name in its own database.

Projections (`*_view`) are built from other services' events only. Requests, legs and
their history are the saga's state; every deadline (a request's expiry, a supplier leg's
accept_by, a reservation's expiry) is a column, so it survives a restart.
"""

import sqlalchemy as sa
from sqlmodel import SQLModel

import jejaring_shared.tables  # noqa: F401  (outbox and inbox belong to every service)
from jejaring_shared.tables import BigIntId

metadata = SQLModel.metadata

TRANSFER = sa.MetaData()
UtcDateTime = sa.DateTime(timezone=True)

outlets_view = sa.Table(
    "outlets_view",
    TRANSFER,
    sa.Column("outlet_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("community", sa.String(200), nullable=True),
    sa.Column("region", sa.String(200), nullable=True),
    sa.Column("lat", sa.Float, nullable=True),
    sa.Column("lon", sa.Float, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

stock_view = sa.Table(
    "stock_view",
    TRANSFER,
    sa.Column("outlet_id", sa.String(64), primary_key=True),
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("on_hand", sa.Integer, nullable=False),
    sa.Column("reserved", sa.Integer, nullable=False),
    sa.Column("available", sa.Integer, nullable=False),
    sa.Column("reorder_point", sa.Integer, nullable=False),
    sa.Column("maximum", sa.Integer, nullable=True),
    sa.Column("daily_rate", sa.Float, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_stock_view_sku", "sku"),
)

products_view = sa.Table(
    "products_view",
    TRANSFER,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("case_pack", sa.Integer, nullable=False),
    sa.Column("min_transfer_qty", sa.Integer, nullable=False),
    sa.Column("pareto_class", sa.String(1), nullable=False),
    sa.Column("perishable", sa.Boolean, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

suppliers_view = sa.Table(
    "suppliers_view",
    TRANSFER,
    sa.Column("supplier_id", sa.String(64), primary_key=True),
    sa.Column("community", sa.String(200), nullable=True),
    sa.Column("assigned", sa.Integer, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False),
    sa.Column("declined", sa.Integer, nullable=False),
    sa.Column("timed_out", sa.Integer, nullable=False),
    sa.Column("shipped", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

offers_view = sa.Table(
    "offers_view",
    TRANSFER,
    sa.Column("offer_id", sa.String(64), primary_key=True),
    sa.Column("supplier_id", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.BigInteger, nullable=False),
    sa.Column("lead_time_hours", sa.Integer, nullable=False),
    sa.Column("min_order", sa.Integer, nullable=False),
    sa.Column("valid_until", UtcDateTime, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_offers_view_sku", "sku", "status"),
)

restock_requests = sa.Table(
    "restock_requests",
    TRANSFER,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("outlet_id", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("requested_quantity", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("needed_by", UtcDateTime, nullable=True),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("origin", sa.String(20), nullable=False),
    # "outlet_id|sku" while the request is open, NULL once closed: one open per outlet+sku.
    sa.Column("open_key", sa.String(130), nullable=True, unique=True),
    sa.Column("received", sa.Integer, nullable=False),
    sa.Column("merged", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("excluded", sa.JSON, nullable=False),
    sa.Column("explanation", sa.JSON, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("first_reserved_at", UtcDateTime, nullable=True),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Index("ix_restock_requests_status_expiry", "status", "expires_at"),
)

legs = sa.Table(
    "legs",
    TRANSFER,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("source_kind", sa.String(10), nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("offer_id", sa.String(64), nullable=True),
    sa.Column("outlet_id", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("accept_by", UtcDateTime, nullable=True),
    sa.Column("reservation_expires_at", UtcDateTime, nullable=True),
    sa.Column("sent_quantity", sa.Integer, nullable=True),
    sa.Column("received_quantity", sa.Integer, nullable=True),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("terms", sa.JSON, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_legs_state_accept_by", "state", "accept_by"),
    sa.Index("ix_legs_source", "source_id", "sku", "state"),
)

saga_history = sa.Table(
    "saga_history",
    TRANSFER,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("leg_id", sa.String(64), nullable=True),
    sa.Column("from_state", sa.String(30), nullable=True),
    sa.Column("to_state", sa.String(30), nullable=False),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
)

# -- rebalancing plans (migration 0003) ------------------------------------------------------

rebalancing_plans = sa.Table(
    "rebalancing_plans",
    TRANSFER,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("horizon_days", sa.Integer, nullable=False),
    sa.Column("skus", sa.JSON, nullable=True),
    sa.Column("max_lines", sa.Integer, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("cost", sa.BigInteger, nullable=False),
    sa.Column("stockouts_avoided", sa.Integer, nullable=False),
    sa.Column("short", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_rebalancing_plans_created", "created_at"),
)

rebalancing_plan_lines = sa.Table(
    "rebalancing_plan_lines",
    TRANSFER,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("plan_id", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("source_kind", sa.String(10), nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("offer_id", sa.String(64), nullable=True),
    sa.Column("outlet_id", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("cost", sa.BigInteger, nullable=False),
    sa.Column("cover_after_days", sa.Float, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    # The restock request an approved line opened (its origin is "rebalancing").
    sa.Column("request_id", sa.String(64), nullable=True, unique=True),
    sa.Column("decided_at", UtcDateTime, nullable=True),
    sa.Index("ix_rebalancing_plan_lines_plan", "plan_id", "position"),
)
