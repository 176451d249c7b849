"""Tables owned by this service; imported by migrations/env.py for autogenerate.

The catalog's own tables live in `CATALOG` (plain SQLAlchemy Core), not in the process-wide
SQLModel metadata: every service is importable in one process (tests, tools), and two
services may each own a table of the same name in their own databases.
"""

import sqlalchemy as sa
from sqlmodel import SQLModel

import jejaring_shared.tables  # noqa: F401  (outbox and inbox belong to every service)

metadata = SQLModel.metadata

CATALOG = sa.MetaData()
UtcDateTime = sa.DateTime(timezone=True)

clusters = sa.Table(
    "business_clusters",
    CATALOG,
    sa.Column("code", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

categories = sa.Table(
    "categories",
    CATALOG,
    sa.Column("code", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

products = sa.Table(
    "products",
    CATALOG,
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
    sa.Index("ix_products_cluster", "cluster", "sku"),
    sa.Index("ix_products_category", "category", "sku"),
    sa.Index("ix_products_status", "status", "sku"),
)
