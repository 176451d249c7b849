"""API keys in the gateway's own database: only the SHA-256 of the secret is stored."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import migrations
from jejaring_shared.db import create_engine, read_connection

from ..domain.identity import Principal, hash_secret, new_key, secret_matches, split_key

MIGRATIONS = "jejaring_gateway.migrations"
metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(64), nullable=True),
    sa.Column("label", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    role: str
    subject: str | None
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    secret_hash: str = ""

    @property
    def name(self) -> str:
        return f"{self.role}:{self.subject}" if self.subject else self.role

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "role": self.name,
            "label": self.label,
            "created_at": _aware(self.created_at).isoformat(),
            "revoked_at": _aware(self.revoked_at).isoformat() if self.revoked_at else None,
        }


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        role=row.role,
        subject=row.subject,
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        secret_hash=row.secret_hash,
    )


class KeyStore:
    """Issue, list, revoke and authenticate keys.

    Authentication caches what it looked up (found or not) for `cache_s` seconds, so a
    revoked key stops working within that time, and a request costs no database read.
    """

    def __init__(self, engine: AsyncEngine, cache_s: float = 5.0, max_cached: int = 50_000):
        self.engine = engine
        self.cache_s = cache_s
        self.max_cached = max_cached
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        # One database read per key at a time: when a busy key's entry expires, every
        # request in flight would otherwise miss the cache and read it at once.
        self._lookups: dict[str, asyncio.Future[KeyRecord | None]] = {}

    @classmethod
    async def open(cls, database_url: str, cache_s: float = 5.0) -> KeyStore:
        engine = create_engine(database_url)
        await migrations.upgrade(engine, MIGRATIONS)
        return cls(engine, cache_s)

    async def close(self) -> None:
        await self.engine.dispose()

    async def issue(
        self, role: str, subject: str | None, label: str | None = None
    ) -> tuple[KeyRecord, str]:
        """A new key; the returned key text is the only time the secret is seen."""
        key_id, secret, token = new_key()
        record = KeyRecord(
            key_id=key_id,
            role=role,
            subject=subject,
            label=label,
            created_at=datetime.now(UTC),
            revoked_at=None,
            secret_hash=hash_secret(secret),
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    secret_hash=record.secret_hash,
                    role=role,
                    subject=subject,
                    label=label,
                    created_at=record.created_at,
                )
            )
        self._cache.pop(key_id, None)
        return record, token

    async def list(self, include_revoked: bool = False) -> list[KeyRecord]:
        stmt = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if not include_revoked:
            stmt = stmt.where(api_keys.c.revoked_at.is_(None))
        async with read_connection(self.engine) as conn:
            return [_record(r) for r in (await conn.execute(stmt)).all()]

    async def get(self, key_id: str) -> KeyRecord | None:
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))
            ).first()
        return _record(row) if row is not None else None

    async def revoke(self, key_id: str) -> bool:
        """True when the key existed and was active."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._cache.pop(key_id, None)
        return bool(result.rowcount)

    def cached(self, token: str) -> Principal | bool | None:
        """Without waiting: the principal from the cache, None when the cache says the key
        is bad, False when the cache does not know (ask `authenticate`)."""
        parts = split_key(token)
        if parts is None:
            return None
        cached = self._cache.get(parts[0])
        if cached is None or cached[0] <= time.monotonic():
            return False
        record = cached[1]
        if record is None or record.revoked_at is not None:
            return None
        if not secret_matches(parts[1], record.secret_hash):
            return None
        return Principal(key_id=record.key_id, role=record.role, subject=record.subject)

    async def _refresh(self, key_id: str) -> KeyRecord | None:
        started = time.monotonic()
        record = await self.get(key_id)
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[key_id] = (started + self.cache_s, record)
        return record

    async def authenticate(self, token: str) -> Principal | None:
        parts = split_key(token)
        if parts is None:
            return None
        key_id, secret = parts
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > time.monotonic():
            record = cached[1]
        else:
            lookup = self._lookups.get(key_id)
            if lookup is None:
                lookup = asyncio.ensure_future(self._refresh(key_id))
                self._lookups[key_id] = lookup
                lookup.add_done_callback(lambda _: self._lookups.pop(key_id, None))
            # Shielded: a waiter that gives up must not cancel the others' lookup.
            record = await asyncio.shield(lookup)
        if record is None or record.revoked_at is not None:
            return None
        if not secret_matches(secret, record.secret_hash):
            return None
        return Principal(key_id=record.key_id, role=record.role, subject=record.subject)
