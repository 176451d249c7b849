"""The deadline driver: a background task of the service (ServiceDefinition.background).

Every `deadline_poll_s` it reads the deadlines stored in the database, so they hold across
restarts: a supplier leg not accepted by its accept_by times out and the remainder is
re-matched without that supplier; a request past its expiry is expired (every reservation
not dispatched is released). Every `rematch_interval_s` it matches the requests still
waiting for a source, together, so scarce stock goes to at-risk outlets and pareto A items
first. Each step is its own transaction; a failing step is logged and held off (`Holdoff`)
before it is tried again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from jejaring_shared.app import Runtime
from jejaring_shared.consumer import is_dependency_failure
from jejaring_shared.contracts import utcnow
from jejaring_shared.db import UnitOfWorkFactory, is_conflict
from jejaring_shared.errors import ApiError

from .. import saga
from ..config import TransferSettings

log = logging.getLogger(__name__)


PAGE = 100
"""Due legs and due requests taken per round (each a transaction of its own)."""


class Holdoff:
    """Steps that failed wait before they are tried again, twice as long after each failure
    (from `first_s` up to `max_s`). A row that always fails (a bug, a row the code cannot
    handle) would otherwise log a traceback every round and, with a page's worth of others
    like it at the head of the deadline order, keep every row due after them waiting."""

    def __init__(
        self,
        first_s: float = 1.0,
        max_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first_s, self._max_s = first_s, max_s
        self.clock = clock
        self._held: dict[str, tuple[float, int]] = {}  # key -> (not before, failures)

    def waiting(self, now: float) -> int:
        return sum(1 for until, _ in self._held.values() if until > now)

    def ready(self, key: str, now: float) -> bool:
        held = self._held.get(key)
        return held is None or held[0] <= now

    def failed(self, key: str, now: float, *, transient: bool = False) -> int:
        """Count a failure; returns how many in a row. A transient one (the database down,
        a lost race) is not the row's fault: it waits `first_s` and does not count, so
        the row comes due again soon after the database does."""
        _, failures = self._held.get(key, (0.0, 0))
        if not transient:
            failures += 1
        wait = min(self._first_s * 2 ** max(failures - 1, 0), self._max_s)
        self._held[key] = (now + wait, failures)
        return failures

    def succeeded(self, key: str) -> None:
        self._held.pop(key, None)

    def forget_except(self, keys: set[str]) -> None:
        """Drop what is no longer due (done by someone else, or its row changed)."""
        for key in [k for k in self._held if k not in keys]:
            del self._held[key]


class _HasUow(Protocol):
    uow: UnitOfWorkFactory


def _page(ids: list[str], kind: str, holdoff: Holdoff, now: float) -> list[str]:
    return [i for i in ids if holdoff.ready(f"{kind}:{i}", now)][:PAGE]


def _failed(holdoff: Holdoff, kind: str, key: str, what: str, exc: Exception) -> None:
    transient = is_dependency_failure(exc) or is_conflict(exc)
    failures = holdoff.failed(f"{kind}:{key}", holdoff.clock(), transient=transient)
    if transient:
        log.warning("transfer driver: %s %s: %r; trying again shortly", what, key, exc)
        return
    # The traceback once; after that a line, so a row that always fails cannot flood the log.
    log.warning(
        "transfer driver: %s %s failed (%d in a row); held off before the next try",
        what,
        key,
        failures,
        exc_info=failures == 1,
    )


async def drive_once(
    runtime: _HasUow,
    settings: TransferSettings,
    *,
    rematch: bool,
    holdoff: Holdoff | None = None,
    window: saga.RematchWindow | None = None,
) -> int:
    """One round; returns the number of steps taken (for tests)."""
    holdoff = holdoff if holdoff is not None else Holdoff()
    steps = 0
    now = utcnow()
    clock = holdoff.clock()
    extra = holdoff.waiting(clock)  # held rows may head the order: read past them
    async with runtime.uow() as uow:
        conn = await uow.session.connection()
        due_legs = await saga.due_legs(conn, now, limit=PAGE + extra)
        due_requests = await saga.due_requests(conn, now, limit=PAGE + extra)
    if len(due_legs) < PAGE + extra and len(due_requests) < PAGE + extra:
        due = {f"leg:{i}" for i in due_legs} | {f"request:{i}" for i in due_requests}
        holdoff.forget_except(due)
    # One step failing (a bad row, a lost race) must not hold up the others.
    for leg_id in _page(due_legs, "leg", holdoff, clock):
        try:
            async with runtime.uow() as uow:
                ctx = saga.Ctx(uow, settings, utcnow())
                if await saga.leg_failed(
                    ctx, leg_id, "timed_out", allowed_from=("proposed",), reason="accept_timeout"
                ):
                    steps += 1
                await uow.commit()
            holdoff.succeeded(f"leg:{leg_id}")
        except Exception as exc:
            _failed(holdoff, "leg", leg_id, "timing out leg", exc)
    for request_id in _page(due_requests, "request", holdoff, clock):
        try:
            async with runtime.uow() as uow:
                ctx = saga.Ctx(uow, settings, utcnow())
                await saga.stop_request(ctx, request_id, "expired", "expired")
                await uow.commit()
        except ApiError:
            continue  # closed meanwhile: not due next round
        except Exception as exc:
            _failed(holdoff, "request", request_id, "expiring request", exc)
            continue
        holdoff.succeeded(f"request:{request_id}")
        steps += 1
    if rematch:
        async with runtime.uow() as uow:
            ctx = saga.Ctx(uow, settings, utcnow())
            if await saga.rematch_waiting(ctx, window=window):
                steps += 1
            await uow.commit()
    return steps


def deadline_driver(
    settings: TransferSettings,
) -> Callable[[Runtime], Coroutine[Any, Any, None]]:
    async def run(runtime: Runtime) -> None:
        last_rematch = time.monotonic()
        holdoff = Holdoff()
        window = saga.RematchWindow()
        while True:
            due = time.monotonic() - last_rematch >= settings.rematch_interval_s
            try:
                await drive_once(runtime, settings, rematch=due, holdoff=holdoff, window=window)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("transfer deadline driver round failed; retrying")
            if due:
                last_rematch = time.monotonic()
            await asyncio.sleep(settings.deadline_poll_s)

    return run
