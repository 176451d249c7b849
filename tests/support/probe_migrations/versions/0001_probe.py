"""backbone and effects"""

import sqlalchemy as sa
from alembic import op

from jejaring_shared.migrations import create_backbone_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_backbone_tables()
    op.create_table(
        "effects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("applied_by", sa.String(50), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("effects")
