"""Backbone tables that every service has: the outbox and the inbox.

Each service's first Alembic migration creates them with `migrations.create_backbone_tables`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from .contracts import utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for a log.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class OutboxRecord(SQLModel, table=True):
    """An event waiting to be published (published_at is null) or already published."""

    __tablename__ = "outbox"
    # Only pending rows are indexed: publishing drops a row from the index, cheaply.
    __table_args__ = (
        sa.Index(
            "ix_outbox_pending",
            "id",
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True))
    event_id: str = Field(sa_column=sa.Column(sa.String(36), nullable=False, unique=True))
    topic: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    key: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    type: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )
    published_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True)
    )


class InboxRecord(SQLModel, table=True):
    """An event a consumer group has applied; written in the same transaction as the effect."""

    __tablename__ = "inbox"

    consumer_group: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))
    event_id: str = Field(sa_column=sa.Column(sa.String(36), primary_key=True))
    event_type: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    applied_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )
