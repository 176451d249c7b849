"""Tables owned by this service; imported by migrations/env.py for autogenerate.

`movements` is the immutable ledger; `stock_levels` is its projection, updated in the same
transaction as every movement (and by reservations, which change `reserved` only).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

import jejaring_shared.tables  # noqa: F401  (outbox and inbox belong to every service)
from jejaring_shared.tables import BigIntId

metadata = SQLModel.metadata

TZ = sa.DateTime(timezone=True)


class OutletRow(SQLModel, table=True):
    __tablename__ = "outlets"

    id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    community: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    region: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    lat: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    lon: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(TZ, nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(TZ, nullable=False))


class StockLevelRow(SQLModel, table=True):
    __tablename__ = "stock_levels"
    __table_args__ = (sa.CheckConstraint("reserved >= 0", name="ck_stock_levels_reserved"),)

    outlet_id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    sku: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    on_hand: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    reserved: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    reorder_point: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    maximum: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    safety_stock: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    rop_pinned: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    max_pinned: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    auto_restock: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    lead_time_days: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    velocity: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    # Crossing state: an event is raised when a flag turns on, not while it stays on.
    low_flag: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    out_flag: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    surplus_flag: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    negative_flag: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(TZ, nullable=False))


class MovementRow(SQLModel, table=True):
    __tablename__ = "movements"
    __table_args__ = (
        sa.UniqueConstraint("outlet_id", "idempotency_key", name="uq_movements_idempotency"),
        sa.Index("ix_movements_outlet_sku", "outlet_id", "sku", "id"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True))
    outlet_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    sku: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    quantity: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    """Signed: what this movement added to on hand."""
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))
    actor: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    occurred_at: datetime = Field(sa_column=sa.Column(TZ, nullable=False))
    recorded_at: datetime = Field(sa_column=sa.Column(TZ, nullable=False))
    idempotency_key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    reference: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))


class ReservationRow(SQLModel, table=True):
    __tablename__ = "reservations"
    __table_args__ = (
        sa.Index("ix_reservations_active_expiry", "status", "expires_at"),
        sa.Index("ix_reservations_level", "outlet_id", "sku", "status"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True))
    leg_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    outlet_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    sku: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    quantity: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    """active, released, expired or dispatched."""
    expires_at: datetime = Field(sa_column=sa.Column(TZ, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(TZ, nullable=False))
    closed_at: datetime | None = Field(default=None, sa_column=sa.Column(TZ))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))


OUTLETS: sa.Table = OutletRow.__table__  # type: ignore[attr-defined]
LEVELS: sa.Table = StockLevelRow.__table__  # type: ignore[attr-defined]
MOVEMENTS: sa.Table = MovementRow.__table__  # type: ignore[attr-defined]
RESERVATIONS: sa.Table = ReservationRow.__table__  # type: ignore[attr-defined]
