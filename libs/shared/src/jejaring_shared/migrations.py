"""Alembic helpers shared by every service's migrations.

A service keeps its migrations in `<package>/migrations/` (env.py + versions/); its env.py
calls `run_env(target_metadata)`. `upgrade(engine, package)` applies them on start-up.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import BigIntId


def alembic_config(migrations_package: str, connection: Any | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files(migrations_package)))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade_sync(connection: Any, migrations_package: str) -> None:
    command.upgrade(alembic_config(migrations_package, connection), "head")


async def upgrade(engine: AsyncEngine, migrations_package: str) -> None:
    """Bring the database to the newest revision (idempotent)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together must not migrate at the same time.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(74656)"))
        await conn.run_sync(_upgrade_sync, migrations_package)


def run_env(target_metadata: Any) -> None:
    """Body of every env.py: run on the connection that `upgrade` handed over."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through jejaring_shared.migrations.upgrade()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def create_backbone_tables() -> None:
    """The outbox and inbox tables; called from each service's first migration."""
    op.create_table(
        "outbox",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Only pending rows are indexed: publishing drops a row from the index, cheaply.
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer_group", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )


def drop_backbone_tables() -> None:
    op.drop_table("inbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")
