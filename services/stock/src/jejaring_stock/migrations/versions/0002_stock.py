"""outlets, stock ledger (movements), levels and reservations

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

from jejaring_shared.tables import BigIntId

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outlets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("community", sa.String(200)),
        sa.Column("region", sa.String(200)),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "stock_levels",
        sa.Column("outlet_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("on_hand", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.Column("reorder_point", sa.Integer, nullable=False),
        sa.Column("maximum", sa.Integer, nullable=False),
        sa.Column("safety_stock", sa.Integer, nullable=False),
        sa.Column("rop_pinned", sa.Boolean, nullable=False),
        sa.Column("max_pinned", sa.Boolean, nullable=False),
        sa.Column("auto_restock", sa.Boolean, nullable=False),
        sa.Column("lead_time_days", sa.Float),
        sa.Column("velocity", sa.Float, nullable=False),
        sa.Column("low_flag", sa.Boolean, nullable=False),
        sa.Column("out_flag", sa.Boolean, nullable=False),
        sa.Column("surplus_flag", sa.Boolean, nullable=False),
        sa.Column("negative_flag", sa.Boolean, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.CheckConstraint("reserved >= 0", name="ck_stock_levels_reserved"),
    )
    op.create_table(
        "movements",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("outlet_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("reference", sa.String(100)),
        sa.UniqueConstraint("outlet_id", "idempotency_key", name="uq_movements_idempotency"),
    )
    op.create_index("ix_movements_outlet_sku", "movements", ["outlet_id", "sku", "id"])
    op.create_table(
        "reservations",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("leg_id", sa.String(64), nullable=False, unique=True),
        sa.Column("outlet_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("closed_at", TZ),
        sa.Column("reason", sa.String(500)),
    )
    op.create_index("ix_reservations_active_expiry", "reservations", ["status", "expires_at"])
    op.create_index("ix_reservations_level", "reservations", ["outlet_id", "sku", "status"])


def downgrade() -> None:
    op.drop_index("ix_reservations_level", table_name="reservations")
    op.drop_index("ix_reservations_active_expiry", table_name="reservations")
    op.drop_table("reservations")
    op.drop_index("ix_movements_outlet_sku", table_name="movements")
    op.drop_table("movements")
    op.drop_table("stock_levels")
    op.drop_table("outlets")
