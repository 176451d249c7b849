"""The event envelope that every Jejaring event travels in (see docs/architecture.md)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_traceparent() -> str:
    """A fresh W3C traceparent, so a request can be followed across services."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


class Envelope(BaseModel):
    """Wire form of an event: metadata plus a payload validated against the registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique; used for de-duplication")
    type: str = Field(description="Past-tense event name, e.g. stock.reserved")
    version: int = Field(default=1, ge=1)
    source: str = Field(description="Service that emitted the event")
    occurred_at: datetime = Field(default_factory=utcnow, description="UTC")
    key: str = Field(description="Aggregate key; one key's events stay in order")
    correlation_id: str | None = Field(
        default=None, description="The restock request (or flow) that started it"
    )
    causation_id: uuid.UUID | None = Field(default=None, description="Event that caused this one")
    traceparent: str | None = Field(default=None, description="W3C trace context")
    payload: dict[str, Any]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)
