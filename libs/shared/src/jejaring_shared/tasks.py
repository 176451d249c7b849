"""Background-task helpers shared by the relay and the consumer runner."""

from __future__ import annotations

import asyncio
import contextlib


async def finish(task: asyncio.Task[None] | None, timeout_s: float) -> None:
    """Let a task that was asked to stop finish; cancel it if it overruns the bound."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake as soon as the event is set (used for stop-aware backoff)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
