"""suppliers, catalog projection, offers, assignments, webhook deliveries

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from jejaring_shared.tables import BigIntId

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UtcDateTime = sa.DateTime(timezone=True)
Money = sa.BigInteger  # integer rupiah


def upgrade() -> None:
    op.create_table(
        "suppliers",
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
    op.create_table(
        "catalog_products",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(20), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "offers",
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
    )
    op.create_index("ix_offers_supplier", "offers", ["supplier_id", "created_at"])
    op.create_index("ix_offers_sku", "offers", ["sku", "status"])
    op.create_table(
        "assignments",
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
    )
    op.create_index("ix_assignments_supplier", "assignments", ["supplier_id", "status"])
    op.create_index("ix_assignments_shipped", "assignments", ["supplier_id", "shipped_at"])
    op.create_table(
        "webhook_deliveries",
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
    )
    op.create_index("ix_webhook_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_supplier", "webhook_deliveries", ["supplier_id", "created_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id", sa.String(36), sa.ForeignKey("webhook_deliveries.id"), nullable=False
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("attempted_at", UtcDateTime, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "attempt"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("assignments")
    op.drop_table("offers")
    op.drop_table("catalog_products")
    op.drop_table("suppliers")
