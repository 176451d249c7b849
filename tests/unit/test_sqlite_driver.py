"""SQLite through one worker-thread hop per statement (jejaring_shared.sqlite_driver): what
SQLAlchemy reads from a cursor is what aiosqlite's own cursor gives, errors included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from jejaring_shared import sqlite_driver
from jejaring_shared.db import create_engine

_T = sa.Table(
    "t",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("v", sa.String, nullable=False, unique=True),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/d.db")
    async with engine.begin() as conn:
        await conn.run_sync(_T.metadata.create_all)
    yield engine
    await engine.dispose()


async def test_the_engine_uses_one_hop_connections(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite_driver.OneHopConnection)
        # The connection is set up as before: WAL, the busy timeout.
        assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
        assert await conn.scalar(sa.text("PRAGMA busy_timeout")) == 30000


async def test_rows_counts_and_ids_are_what_sqlalchemy_expects(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        one = await conn.execute(sa.insert(_T).values(v="a"))
        assert one.inserted_primary_key == (1,)  # from the cursor's lastrowid
        many = await conn.execute(sa.insert(_T), [{"v": "b"}, {"v": "c"}, {"v": "d"}])
        assert many.rowcount == 3
        changed = await conn.execute(sa.update(_T).where(_T.c.id > 2).values(v=_T.c.v + "!"))
        assert changed.rowcount == 2
        returned = await conn.execute(sa.insert(_T).values(v="e").returning(_T.c.id, _T.c.v))
        assert returned.all() == [(5, "e")]
        rows = (await conn.execute(sa.select(_T).order_by(_T.c.id))).all()
        assert rows == [(1, "a"), (2, "b"), (3, "c!"), (4, "d!"), (5, "e")]
        assert (await conn.execute(sa.select(_T).where(_T.c.id == 99))).first() is None
        # Partial fetches come from the buffered rows, in order.
        result = await conn.execute(sa.select(_T.c.v).order_by(_T.c.id))
        assert result.fetchone() == ("a",)
        assert result.fetchmany(2) == [("b",), ("c!",)]
        assert result.fetchall() == [("d!",), ("e",)]


async def test_errors_are_sqlalchemys_and_roll_back(engine: AsyncEngine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(sa.insert(_T).values(v="x"))
            await conn.execute(sa.insert(_T).values(v="x"))
    with pytest.raises(sa.exc.OperationalError):
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT * FROM no_such_table"))
    async with engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(_T)) == 0
        # The connection still works after the errors.
        assert await conn.scalar(sa.text("SELECT 41 + 1")) == 42
