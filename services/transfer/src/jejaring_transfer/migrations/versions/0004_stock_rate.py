"""stock_view keeps each level's smoothed daily sales rate (from stock.level_changed)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter tables in place.
    with op.batch_alter_table("stock_view") as batch:
        batch.add_column(sa.Column("daily_rate", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stock_view") as batch:
        batch.drop_column("daily_rate")
