"""The deadline driver: a background task of the service (ServiceDefinition.background).

Every `deadline_poll_s` it reads the deadlines stored in the database, so they hold across
restarts: a supplier leg not accepted by its accept_by times out and the remainder is
re-matched without that supplier; a request past its expiry is expired (every reservation
not dispatched is released). Every `rematch_interval_s` it matches the requests still
waiting for a source, together, so scarce stock goes to at-risk outlets and pareto A items
first. Each step is its own transaction; a failing step is logged and retried next round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from jejaring_shared.app import Runtime
from jejaring_shared.contracts import utcnow
from jejaring_shared.errors import ApiError

from .. import saga
from ..config import TransferSettings

log = logging.getLogger(__name__)


async def drive_once(runtime: Runtime, settings: TransferSettings, *, rematch: bool) -> int:
    """One round; returns the number of steps taken (for tests)."""
    steps = 0
    now = utcnow()
    async with runtime.uow() as uow:
        conn = await uow.session.connection()
        leg_ids = await saga.due_legs(conn, now)
        request_ids = await saga.due_requests(conn, now)
    # One step failing (a bad row, a lost race) must not hold up the others: it is logged
    # and comes due again next round.
    for leg_id in leg_ids:
        try:
            async with runtime.uow() as uow:
                ctx = saga.Ctx(uow, settings, utcnow())
                if await saga.leg_failed(
                    ctx, leg_id, "timed_out", allowed_from=("proposed",), reason="accept_timeout"
                ):
                    steps += 1
                await uow.commit()
        except Exception:
            log.warning("transfer driver: timing out leg %s failed", leg_id, exc_info=True)
    for request_id in request_ids:
        try:
            async with runtime.uow() as uow:
                ctx = saga.Ctx(uow, settings, utcnow())
                await saga.stop_request(ctx, request_id, "expired", "expired")
                await uow.commit()
        except ApiError:
            continue  # closed meanwhile
        except Exception:
            log.warning("transfer driver: expiring request %s failed", request_id, exc_info=True)
            continue
        steps += 1
    if rematch:
        async with runtime.uow() as uow:
            ctx = saga.Ctx(uow, settings, utcnow())
            if await saga.rematch_waiting(ctx):
                steps += 1
            await uow.commit()
    return steps


def deadline_driver(
    settings: TransferSettings,
) -> Callable[[Runtime], Coroutine[Any, Any, None]]:
    async def run(runtime: Runtime) -> None:
        last_rematch = time.monotonic()
        while True:
            due = time.monotonic() - last_rematch >= settings.rematch_interval_s
            try:
                await drive_once(runtime, settings, rematch=due)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("transfer deadline driver round failed; retrying")
            if due:
                last_rematch = time.monotonic()
            await asyncio.sleep(settings.deadline_poll_s)

    return run
