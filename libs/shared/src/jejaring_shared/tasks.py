"""Background-task helpers shared by the relay, the consumer runner and service apps."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


async def finish(task: asyncio.Task[None] | None, timeout_s: float) -> None:
    """Let a task that was asked to stop (by an event or by cancel()) finish; cancel it if
    it overruns the bound. Never raises the task's own outcome: a shutdown that calls this
    must go on to stop everything else. Only our own cancellation propagates."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we were cancelled ourselves, not just the task we wait for
    except Exception:
        log.exception("task %s failed while stopping", task.get_name())


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake as soon as the event is set (used for stop-aware backoff)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):  # wait_for would run it as a task of its own
            await event.wait()
