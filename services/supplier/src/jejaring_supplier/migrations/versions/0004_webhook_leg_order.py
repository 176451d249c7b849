"""webhook deliveries name their assignment, so a leg's deliveries go out in order

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
    # Nullable: deliveries written before this revision name no leg and keep no order,
    # as before (at most a day of retries is left of them).
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("leg_id", sa.String(64), nullable=True))
    op.create_index("ix_webhook_leg", "webhook_deliveries", ["leg_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_leg", table_name="webhook_deliveries")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("leg_id")
