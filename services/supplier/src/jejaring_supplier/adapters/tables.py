"""Tables owned by this service; imported by migrations/env.py for autogenerate.

The supplier's own tables live in `SUPPLIER` (plain SQLAlchemy Core), not in the
process-wide SQLModel metadata: every service is importable in one process (tests, tools),
and another service may own a table of the same name in its own database.
"""

import sqlalchemy as sa
from sqlmodel import SQLModel

import jejaring_shared.tables  # noqa: F401  (outbox and inbox belong to every service)
from jejaring_shared.tables import BigIntId

metadata = SQLModel.metadata

SUPPLIER = sa.MetaData()
UtcDateTime = sa.DateTime(timezone=True)
Money = sa.BigInteger  # integer rupiah

suppliers = sa.Table(
    "suppliers",
    SUPPLIER,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("community", sa.String(200), nullable=True),
    sa.Column("regions", sa.JSON, nullable=False),
    sa.Column("clusters", sa.JSON, nullable=False),
    sa.Column("contact_name", sa.String(200), nullable=True),
    sa.Column("contact_phone", sa.String(40), nullable=True),
    sa.Column("contact_email", sa.String(200), nullable=True),
    sa.Column("webhook_url", sa.String(500), nullable=True),
    sa.Column("webhook_secret", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

catalog_products = sa.Table(
    "catalog_products",
    SUPPLIER,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("unit", sa.String(20), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

offers = sa.Table(
    "offers",
    SUPPLIER,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("supplier_id", sa.String(64), sa.ForeignKey("suppliers.id"), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", Money, nullable=False),
    sa.Column("lead_time_hours", sa.Integer, nullable=False),
    sa.Column("min_order", sa.Integer, nullable=False),
    sa.Column("valid_until", UtcDateTime, nullable=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("withdrawn_at", UtcDateTime, nullable=True),
    sa.Index("ix_offers_supplier", "supplier_id", "created_at"),
    sa.Index("ix_offers_sku", "sku", "status"),
)

assignments = sa.Table(
    "assignments",
    SUPPLIER,
    sa.Column("leg_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    # No foreign key: transfer may name a supplier whose registration is not seen yet.
    sa.Column("supplier_id", sa.String(64), nullable=False),
    sa.Column("outlet_id", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", Money, nullable=False),
    sa.Column("accept_by", UtcDateTime, nullable=False),
    sa.Column("ship_by", UtcDateTime, nullable=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("decline_reason", sa.String(500), nullable=True),
    sa.Column("shipped_quantity", sa.Integer, nullable=True),
    sa.Column("ship_note", sa.String(500), nullable=True),
    sa.Column("assigned_at", UtcDateTime, nullable=False),
    sa.Column("accepted_at", UtcDateTime, nullable=True),
    sa.Column("declined_at", UtcDateTime, nullable=True),
    sa.Column("shipped_at", UtcDateTime, nullable=True),
    # Transfer called the leg off (request cancelled or expired, accept timed out).
    sa.Column("cancelled_at", UtcDateTime, nullable=True),
    sa.Column("cancel_reason", sa.String(500), nullable=True),
    sa.Index("ix_assignments_supplier", "supplier_id", "status"),
    sa.Index("ix_assignments_shipped", "supplier_id", "shipped_at"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    SUPPLIER,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("supplier_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(100), nullable=False),
    sa.Column("url", sa.String(500), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    # The assignment the delivery tells of: its deliveries go out one at a time, in order.
    sa.Column("leg_id", sa.String(64), nullable=True),
    sa.Index("ix_webhook_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_supplier", "supplier_id", "created_at"),
    sa.Index("ix_webhook_leg", "leg_id", "created_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    SUPPLIER,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(36), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("attempted_at", UtcDateTime, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(500), nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id", "attempt"),
)
