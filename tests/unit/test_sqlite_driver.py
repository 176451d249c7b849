"""SQLite through one worker-thread hop per statement (jejaring_shared.sqlite_driver): what
SQLAlchemy reads from a cursor is what aiosqlite's own cursor gives, errors included."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


async def test_a_transaction_begins_in_its_first_statements_hop(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN goes with the first statement (one hop less per transaction); a writing
    transaction still holds SQLite's write lock from there to its commit, a read-only one
    (deferred) never takes it, and one with no statement commits without beginning."""
    from jejaring_shared.db import READ_ONLY_OPTION

    hops: list[str] = []
    real = sqlite_driver._run

    def counting(db: Any, sql: str, parameters: Any, many: bool, begin: str | None) -> Any:
        hops.append(f"{begin} + {sql}" if begin else sql)
        return real(db, sql, parameters, many, begin)

    monkeypatch.setattr(sqlite_driver, "_run", counting)
    other = sqlite3.connect(tmp_path / "d.db", timeout=0, isolation_level=None)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(_T).values(v="a"))
            assert hops == ["BEGIN IMMEDIATE + INSERT INTO t (v) VALUES (?)"]
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await conn.execute(sa.insert(_T).values(v="b"))
        other.execute("BEGIN IMMEDIATE")  # committed: the lock is free again
        other.execute("ROLLBACK")
        async with engine.connect() as conn:
            reader = await conn.execution_options(**{READ_ONLY_OPTION: True})
            assert await reader.scalar(sa.select(sa.func.count()).select_from(_T)) == 2
            assert hops[-1].startswith("BEGIN + SELECT count(*)")
            other.execute("BEGIN IMMEDIATE")  # a deferred read holds no write lock
            other.execute("ROLLBACK")
        n = len(hops)
        async with engine.begin():
            pass  # nothing run: nothing began, nothing to commit
        assert len(hops) == n
    finally:
        other.close()


async def test_a_begin_that_fails_is_tried_again_with_the_next_statement(
    engine: AsyncEngine,
) -> None:
    """A failed BEGIN (SQLite busy, here a bad one) must not leave the rest of the
    transaction in autocommit: the next statement runs it first again."""
    async with engine.connect() as conn:
        await conn.begin()
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, sqlite_driver.OneHopConnection)
        assert driver.pending_begin == "BEGIN IMMEDIATE"
        driver.pending_begin = "BEGIN NONSENSE"
        with pytest.raises(sa.exc.OperationalError):
            await conn.execute(sa.insert(_T).values(v="a"))
        assert driver.pending_begin == "BEGIN NONSENSE"
        driver.pending_begin = "BEGIN IMMEDIATE"
        await conn.execute(sa.insert(_T).values(v="a"))
        assert driver.pending_begin is None and driver._conn.in_transaction
        await conn.rollback()
    async with engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(_T)) == 0
