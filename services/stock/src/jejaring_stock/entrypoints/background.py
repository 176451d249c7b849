"""Periodic work started with the app: the reservation sweeper and the sales-rate refresh."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from jejaring_shared.app import Runtime
from jejaring_shared.contracts import utcnow

from .. import application as app

log = logging.getLogger(__name__)

Job = Callable[[Runtime], Coroutine[Any, Any, None]]


def every(interval_s: float, name: str, step: Callable[[Runtime], Awaitable[object]]) -> Job:
    async def loop(runtime: Runtime) -> None:
        while True:
            try:
                await step(runtime)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database may be down for a while; the next round tries again.
                log.warning("stock %s: %s", name, exc)
            await asyncio.sleep(interval_s)

    return loop


def background_jobs(
    policy: app.Policy, *, sweep_interval_s: float, velocity_interval_s: float
) -> list[Job]:
    async def sweep(runtime: Runtime) -> None:
        # Several rounds while there is a backlog, so a burst is not spread over minutes.
        while await app.sweep_expired(runtime.uow, policy, utcnow()) == 200:
            pass

    async def velocity(runtime: Runtime) -> None:
        await app.refresh_velocity(runtime.uow, policy, utcnow())

    return [
        every(sweep_interval_s, "reservation sweeper", sweep),
        every(velocity_interval_s, "sales-rate refresh", velocity),
    ]
