"""Group commit for restock requests.

Each POST /restock-requests used to be its own transaction. On SQLite every transaction
takes the single write lock (BEGIN IMMEDIATE), so at 100 requests per second they queued
on the lock (SQLite's busy handler sleeps between tries) and the service fell behind. Here
the requests that arrive while a batch is being written wait for the next batch, and each
batch is one unit of work: the requests are opened and matched one after the other, in
arrival order (first come, as before), then committed together with all their events and
stock.reserve commands. Every caller is answered only after that commit, so a 202 still
means "stored and its commands are in the outbox".

If anything in a batch fails (a refused request, a race on the open key, the database),
the batch is rolled back and each of its requests is run again alone, so every caller
gets its own answer and one bad request never takes others down with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import DBAPIError, IntegrityError

from jejaring_shared.db import UnitOfWork, is_conflict

from .. import saga
from ..config import TransferSettings
from ..domain import matching as m

MAX_BATCH = 64
"""Requests written per transaction at most (bounds how long one holds the write lock)."""


@dataclass
class _Pending:
    outlet_id: str
    sku: str
    quantity: int
    needed_by: datetime | None
    now: datetime
    """When the request arrived: its created_at, so time spent waiting here is counted."""
    answer: asyncio.Future[saga.Opened] = field(repr=False)


class RestockIntake:
    """One per running app (kept on its runtime); a batch runs in a short-lived task that
    ends when nothing is waiting, so there is nothing to stop at shutdown."""

    def __init__(self, uows: Callable[[], UnitOfWork], settings: TransferSettings) -> None:
        self._uows = uows
        self._settings = settings
        self._waiting: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(
        self, *, outlet_id: str, sku: str, quantity: int, needed_by: datetime | None, now: datetime
    ) -> saga.Opened:
        answer: asyncio.Future[saga.Opened] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(outlet_id, sku, quantity, needed_by, now, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="transfer-restock-intake")
        return await answer

    async def _drain(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    opened = await self._open_together(batch)
                except Exception:
                    for item in batch:
                        await self._open_alone(item)
                else:
                    for item, result in zip(batch, opened, strict=True):
                        if not item.answer.done():
                            item.answer.set_result(result)
                batch = []
        finally:
            # Cancelled (shutdown): nobody is left waiting for an answer that cannot come.
            for item in (*batch, *self._waiting):
                if not item.answer.done():
                    item.answer.cancel()
            self._waiting = []

    async def _open_together(self, batch: list[_Pending]) -> list[saga.Opened]:
        async with self._uows() as uow:
            # One read of what matching needs for the whole batch (three queries instead of
            # three per request); each match then takes its legs out of it in memory. The
            # batch's products and open requests are read once too; the open requests
            # after the network, whose sku locks come before their rows.
            conn = await uow.session.connection()
            destinations = frozenset(item.outlet_id for item in batch)
            skus = sorted({item.sku for item in batch})
            keys = [saga.open_key_of(item.outlet_id, item.sku) for item in batch]
            products = await saga.read_products(conn, skus)
            network = await saga.network_for(
                conn,
                skus,
                batch[0].now,
                destinations=sorted(destinations),
                products=saga.products_from(products),
            )
            reads = saga.Batch(products, await saga.read_open_requests(conn, keys))
            opened = [await self._open(uow, item, network, destinations, reads) for item in batch]
            await uow.commit()
        return opened

    async def _open_alone(self, item: _Pending) -> None:
        for attempt in (1, 2):
            try:
                async with self._uows() as uow:
                    opened = await self._open(uow, item)
                    await uow.commit()
            except IntegrityError as exc:
                # Two first requests for the same outlet and sku at once (another
                # replica): the second, run again, merges.
                if attempt == 1:
                    continue
                self._fail(item, exc)
            except DBAPIError as exc:
                # PostgreSQL ended a deadlock (two matches bumping suppliers' counters in
                # other orders): run again, it goes through.
                if attempt == 1 and is_conflict(exc):
                    continue
                self._fail(item, exc)
            except Exception as exc:
                self._fail(item, exc)
            else:
                if not item.answer.done():
                    item.answer.set_result(opened)
            return

    @staticmethod
    def _fail(item: _Pending, exc: Exception) -> None:
        if not item.answer.done():
            item.answer.set_exception(exc)

    async def _open(
        self,
        uow: UnitOfWork,
        item: _Pending,
        network: m.Network | None = None,
        destinations: frozenset[str] = frozenset(),
        reads: saga.Batch | None = None,
    ) -> saga.Opened:
        ctx = saga.Ctx(
            uow,
            self._settings,
            item.now,
            network=network,
            network_destinations=destinations,
            batch=reads,
        )
        return await saga.open_request(
            ctx,
            outlet_id=item.outlet_id,
            sku=item.sku,
            quantity=item.quantity,
            needed_by=item.needed_by,
            origin="api",
        )


def intake_of(
    runtime: object, uows: Callable[[], UnitOfWork], settings: TransferSettings
) -> RestockIntake:
    """The intake of this run of the app, kept on its runtime (made anew at each start-up, so
    nothing outlives its event loop), made on first use: nothing is built at import time."""
    intake: RestockIntake | None = getattr(runtime, "restock_intake", None)
    if intake is None:
        intake = RestockIntake(uows, settings)
        setattr(runtime, "restock_intake", intake)  # noqa: B010 (Runtime has no such field)
    return intake
