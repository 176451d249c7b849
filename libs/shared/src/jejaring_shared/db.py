"""Database helpers: async engines for SQLite and PostgreSQL, and the unit of work."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from .contracts import REGISTRY, Envelope, EventRegistry, Payload, new_traceparent
from .sqlite_driver import one_hop_creator
from .tables import OutboxRecord


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock_detected and serialization_failure."""


def is_conflict(exc: BaseException) -> bool:
    """The transaction lost a race with another one and was rolled back (PostgreSQL ended a
    deadlock, or a serialization failure): run again, it goes through. SQLAlchemy's asyncpg
    adapter raises these as a plain DBAPIError whose `orig` carries the sqlstate."""
    return isinstance(exc, sa.exc.DBAPIError) and (
        getattr(exc.orig, "sqlstate", None) in _CONFLICT_SQLSTATES
    )


def upsert_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT of `table` that takes ON CONFLICT clauses, in the connection's dialect
    (both SQLite and PostgreSQL have them, spelled alike)."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


READ_ONLY_OPTION = "jejaring_read_only"
SQLITE_LOCK_TIMEOUT_S = 30.0
"""As SQLite's own busy timeout (set on every connection below)."""

# SQLite has one writer at a time. The writers of one process queue here, first come first
# served, and each is woken the moment the lock is free. Left to SQLite, a waiter polls in
# its busy handler with sleeps growing to 100 ms and loses the lock, again and again, to a
# writer that begins right after its own commit: the relay starved behind the intake.
_write_locks: weakref.WeakKeyDictionary[
    sa.Engine, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
] = weakref.WeakKeyDictionary()


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """An async engine tuned for its backend.

    SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE so concurrent writers queue on the
    lock instead of failing on a read-to-write upgrade.
    """
    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)

        def connect_args() -> tuple[Any, dict[str, Any]]:
            args, kwargs = engine.sync_engine.dialect.create_connect_args(engine.url)
            return args, {**kwargs, "timeout": SQLITE_LOCK_TIMEOUT_S}

        # One worker-thread hop per statement instead of aiosqlite's four (sqlite_driver).
        engine = create_async_engine(url, echo=echo, async_creator=one_hop_creator(connect_args))

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            # A read-only unit begins deferred: in WAL mode it then never waits for a
            # writer (an immediate begin would queue behind one, in sqlite's busy sleeps).
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            # Sent with the first statement, in its thread hop (sqlite_driver).
            conn.connection.driver_connection.begin_with_next(
                "BEGIN" if read_only else "BEGIN IMMEDIATE"
            )

        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def column_values(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """`values` for a statement of `table` built once, whose columns come from the
    parameters: a key that is no column would be dropped silently (`.values()` refused
    it), so it is refused here."""
    unknown = [k for k in values if k not in table.c]
    if unknown:
        raise ValueError(f"not columns of {table.name}: {sorted(unknown)}")
    return values


@contextlib.asynccontextmanager
async def write_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """This process's turn to write to a SQLite database (nothing to wait for on PostgreSQL).

    Every writing transaction of the services takes it (units of work, the relay), so they
    queue in order instead of in SQLite's busy sleeps; another process writing the same file
    still meets SQLite's busy timeout. Waiting longer than that timeout raises the
    OperationalError SQLite itself would ("database is locked").
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    per_loop = _write_locks.setdefault(engine.sync_engine, weakref.WeakKeyDictionary())
    lock = per_loop.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    try:
        async with asyncio.timeout(SQLITE_LOCK_TIMEOUT_S):
            await lock.acquire()
    except TimeoutError:
        raise sa.exc.OperationalError(
            "BEGIN IMMEDIATE", None, TimeoutError("database is locked (write lock wait)")
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only: on SQLite its transaction begins deferred, so it never
    waits for (or holds up) a writer."""
    async with engine.connect() as conn:
        yield await conn.execution_options(**{READ_ONLY_OPTION: True})


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


_OUTBOX_COLUMNS = "event_id, topic, key, type, body, created_at"
_PG_OUTBOX_INSERT = sa.text(
    f"INSERT INTO outbox ({_OUTBOX_COLUMNS}) SELECT {_OUTBOX_COLUMNS} "  # noqa: S608
    "FROM ROWS FROM (json_to_recordset(CAST(:rows AS json)) AS (event_id text, topic text, "
    "key text, type text, body text, created_at timestamptz)) "
    # In the order published: the relay sends by id, and ids are drawn in this order.
    f"WITH ORDINALITY AS v({_OUTBOX_COLUMNS}, n) ORDER BY n"
)
"""PostgreSQL: a unit of work's events in one statement, from one JSON parameter."""


class UnitOfWork:
    """One transaction: the state change and the events it causes commit together.

    Rolls back unless `commit()` was called. Events added with `publish()` are written to
    the outbox in the same transaction; after the commit the relay is woken up.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        source: str,
        on_commit: Callable[[], None] | None = None,
        registry: EventRegistry = REGISTRY,
        read_only: bool = False,
        engine: AsyncEngine | None = None,
    ) -> None:
        self._sessions = sessions
        self._engine = engine
        """Given: a writing unit holds the process's SQLite write lock while it is open."""
        self._lock: contextlib.AbstractAsyncContextManager[None] | None = None
        self._source = source
        self._read_only = read_only
        self._registry = registry
        self._on_commit = on_commit
        self._pending: list[Envelope] = []
        self._later: dict[sa.Table, list[dict[str, Any]]] = {}
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside `async with`")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        if not self._read_only and self._engine is not None:
            lock = write_lock(self._engine)
            await lock.__aenter__()
            self._lock = lock
        self._session = self._sessions()
        if self._read_only:
            # Begin now, so the option is on the connection when its transaction starts.
            await self._session.connection(execution_options={READ_ONLY_OPTION: True})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self.session, None
        lock, self._lock = self._lock, None
        try:
            await session.rollback()  # no-op after a commit
        finally:
            try:
                await session.close()
            finally:
                self._pending.clear()
                self._later.clear()
                if lock is not None:
                    await lock.__aexit__(None, None, None)

    def publish(
        self,
        payload: Payload,
        *,
        key: str,
        correlation_id: str | None = None,
        cause: Envelope | None = None,
    ) -> Envelope:
        """Queue an event for the outbox; it is written only if this unit commits."""
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot publish events")
        et = self._registry.for_model(type(payload))
        envelope = Envelope(
            type=et.name,
            version=et.version,
            source=self._source,
            key=key,
            correlation_id=correlation_id or (cause.correlation_id if cause else None),
            causation_id=cause.id if cause else None,
            traceparent=cause.traceparent if cause and cause.traceparent else new_traceparent(),
            payload=payload.model_dump(mode="json"),
        )
        self._pending.append(envelope)
        return envelope

    def insert_later(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Queue a row for `table`, inserted at commit with the others queued for it (one
        executemany, in the order queued), for append-only rows nothing reads before the
        commit (a history): a statement each was a good part of a busy unit's work. Every
        row of a table must have the same keys (an executemany takes the first row's)."""
        rows = self._later.setdefault(table, [])
        if rows and rows[0].keys() != row.keys():
            raise ValueError(f"rows for {table.name} must all have the same keys")
        rows.append(row)

    def _outbox_rows(self, events: list[Envelope], pg: bool) -> list[dict[str, Any]]:
        rows = [
            {
                "event_id": str(e.id),
                "topic": self._registry.get(e.type).topic,
                "key": e.key,
                "type": e.type,
                "body": e.model_dump_json(),
                "created_at": e.occurred_at.isoformat() if pg else e.occurred_at,
            }
            for e in events
        ]
        for row in rows:
            _check_size(row)
        return rows

    async def commit(self) -> None:
        session = self.session
        if self._later:
            conn = await session.connection()
            for table, rows in self._later.items():
                await conn.execute(sa.insert(table), rows)
            self._later.clear()
        events = list(self._pending)
        if events:
            # Through Core: the relay never needs these as ORM objects.
            conn = await session.connection()
            pg = conn.dialect.name == "postgresql"
            if len(events) > OFF_LOOP_EVENTS:
                # A bulk change (an import): serialising its events is seconds of CPU.
                rows = await asyncio.to_thread(self._outbox_rows, events, pg)
            else:
                rows = self._outbox_rows(events, pg)
            if pg:
                # One statement for the lot: an executemany is a row-by-row insert on the
                # server (5 ms for the hundred events of a 500-line POS batch).
                await conn.execute(_PG_OUTBOX_INSERT, {"rows": orjson.dumps(rows).decode()})
            else:
                await conn.execute(sa.insert(OutboxRecord.__table__), rows)  # type: ignore[attr-defined]
        await session.commit()
        self._pending.clear()
        if events and self._on_commit is not None:
            self._on_commit()


OFF_LOOP_EVENTS = 1_000
"""A commit with more events than this serialises them in a thread, off the event loop."""

MAX_EVENT_BYTES = 900_000
"""The largest event body the outbox takes: Kafka refuses a record over its producer's and
broker's 1 MiB, and an outbox row it refuses would stop the relay, every later event of the
service waiting behind it. Refused here, the change and its events roll back together."""


class EventTooLarge(ValueError):
    pass


def _check_size(row: dict[str, Any]) -> None:
    body: str = row["body"]
    if len(body) * 4 <= MAX_EVENT_BYTES:  # cannot be over, whatever its characters
        return
    size = len(body.encode())
    if size > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"event {row['type']} (key {row['key']!r}) is {size:,} bytes, over the "
            f"{MAX_EVENT_BYTES:,} Kafka can carry; nothing was committed"
        )


class UnitOfWorkFactory:
    """Makes units of work for one service; handlers call it per request or message."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        source: str,
        on_commit: Callable[[], None] | None = None,
        registry: EventRegistry = REGISTRY,
    ) -> None:
        self.engine = engine
        self.source = source
        self.sessions = session_factory(engine)
        self.on_commit = on_commit
        self.registry = registry

    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        """`read_only`: for reads only (a GET); on SQLite it does not take the write lock."""
        return UnitOfWork(
            self.sessions,
            source=self.source,
            on_commit=self.on_commit,
            registry=self.registry,
            read_only=read_only,
            engine=self.engine,
        )
