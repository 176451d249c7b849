"""rebalancing plans and their lines

Revision ID: 0003
Revises: 0002

The tables are declared here as they were at this revision (not imported from the app),
so later changes to the code do not change what this migration creates.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PLANS = sa.MetaData()
UtcDateTime = sa.DateTime(timezone=True)

rebalancing_plans = sa.Table(
    "rebalancing_plans",
    PLANS,
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
    PLANS,
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
    sa.Column("request_id", sa.String(64), nullable=True, unique=True),
    sa.Column("decided_at", UtcDateTime, nullable=True),
    sa.Index("ix_rebalancing_plan_lines_plan", "plan_id", "position"),
)


def upgrade() -> None:
    PLANS.create_all(op.get_bind())


def downgrade() -> None:
    PLANS.drop_all(op.get_bind())
