"""products, categories and business clusters

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "business_clusters",
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "categories",
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "products",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("barcode", sa.String(14), nullable=True, unique=True),
        sa.Column("unit", sa.String(20), nullable=False),
        sa.Column("category", sa.String(40), sa.ForeignKey("categories.code"), nullable=True),
        sa.Column("cluster", sa.String(40), sa.ForeignKey("business_clusters.code"), nullable=True),
        sa.Column("case_pack", sa.Integer, nullable=False),
        sa.Column("min_transfer_qty", sa.Integer, nullable=False),
        sa.Column("perishable", sa.Boolean, nullable=False),
        sa.Column("shelf_life_days", sa.Integer, nullable=True),
        sa.Column("member_made", sa.Boolean, nullable=False),
        sa.Column("pareto_class", sa.String(1), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("retired_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_products_cluster", "products", ["cluster", "sku"])
    op.create_index("ix_products_category", "products", ["category", "sku"])
    op.create_index("ix_products_status", "products", ["status", "sku"])


def downgrade() -> None:
    op.drop_table("products")
    op.drop_table("categories")
    op.drop_table("business_clusters")
