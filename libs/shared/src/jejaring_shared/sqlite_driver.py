"""aiosqlite with one thread hop per statement.

aiosqlite runs every sqlite3 call in its connection's worker thread, and SQLAlchemy's
adapter makes four such calls per statement: open a cursor, execute, fetch the rows,
close the cursor. Each hop is a queue put, a wake-up of the worker (which must take the
GIL from a busy event loop) and a self-pipe write to wake the loop again. Here the cursor
does all four in one hop and keeps what SQLAlchemy reads afterwards (description,
rowcount, lastrowid, the rows). Everything else is aiosqlite's own, the transaction calls
(commit, rollback) included once a transaction has begun.

A transaction's BEGIN goes with its first statement, in that statement's hop, not in a hop
of its own (`OneHopConnection.begin_with_next`); a transaction with no statement never
begins.

Rows are buffered, as SQLAlchemy's adapter buffers them anyway (it calls fetchall right
after execute); a server-side cursor, which nothing here uses, would get them buffered too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite

_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(
    db: sqlite3.Connection, sql: str, parameters: Any, many: bool, begin: str | None
) -> _Outcome:
    """In the worker thread: the transaction's BEGIN if it is the first statement, then the
    whole statement, from cursor to close."""
    if begin is not None:
        db.execute(begin)
    cursor = db.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneHopCursor:
    """The part of aiosqlite's Cursor that SQLAlchemy's aiosqlite adapter uses."""

    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._rows = []

    async def _statement(self, sql: str, parameters: Any, many: bool) -> OneHopCursor:
        conn = self._connection
        begin, conn.pending_begin = conn.pending_begin, None
        try:
            # aiosqlite's own queue to its worker thread (untyped there).
            outcome: _Outcome = await conn._execute(  # type: ignore[no-untyped-call]
                lambda: _run(conn._conn, sql, parameters, many, begin)
            )
        except Exception:
            # (Not on cancellation: the worker may still run the BEGIN; the rollback that
            # follows is queued behind it.)
            if begin is not None and not conn._conn.in_transaction:
                # The BEGIN itself failed (busy): what follows must not run in autocommit.
                conn.pending_begin = begin
            raise
        self.description, self.rowcount, self.lastrowid, self._rows = outcome
        return self

    async def execute(self, sql: str, parameters: Any = None) -> OneHopCursor:
        return await self._statement(sql, parameters, False)

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> OneHopCursor:
        return await self._statement(sql, parameters, True)

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        n = size or self.arraysize
        rows, self._rows = self._rows[:n], self._rows[n:]
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def close(self) -> None:
        self._rows = []  # the sqlite3 cursor was closed in the worker already


class OneHopConnection(aiosqlite.Connection):
    pending_begin: str | None = None
    """The BEGIN the next statement runs first (set by `begin_with_next`)."""

    def begin_with_next(self, begin: str) -> None:
        """Begin the transaction with the next statement, in its hop: `begin` ("BEGIN",
        "BEGIN IMMEDIATE") was a hop of its own, a quarter to a third of a short unit of
        work's. SQLite begins a transaction at the first statement either way; an error
        of the BEGIN (busy) surfaces as that statement's."""
        self.pending_begin = begin

    def cursor(self) -> OneHopCursor:  # type: ignore[override]
        # No hop to create it: the sqlite3 cursor is made inside each statement's hop.
        return OneHopCursor(self)

    async def commit(self) -> None:
        if self.pending_begin is not None:  # nothing was run: nothing began, no hop
            self.pending_begin = None
            return
        await super().commit()

    async def rollback(self) -> None:
        self.pending_begin = None
        await super().rollback()


def one_hop_creator(connect_args: Callable[[], tuple[Sequence[Any], dict[str, Any]]]) -> Any:
    """An `async_creator` for create_async_engine: a OneHopConnection opened with what
    `connect_args()` returns (the dialect's own arguments, so the file, URI and timeout
    handling is SQLAlchemy's)."""

    def create() -> OneHopConnection:
        args, kwargs = connect_args()
        conn = OneHopConnection(lambda: sqlite3.connect(*args, **kwargs), 64)
        # As SQLAlchemy does for aiosqlite: a worker thread never keeps the process alive.
        conn._thread.daemon = True
        return conn

    return create
