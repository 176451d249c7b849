"""GET /api/v1/events/stream: live events as server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..adapters.events import REPLACED, EventHub, Filters, sse, sse_comment, sse_notice
from ..domain.access import count_of
from .errors import GatewayError, error_response
from .proxy import GatewayState, authenticate, request_id_of, token_of

MAX_REPLAY = 500


async def event_stream(request: Request) -> Response:
    """Query: `type` (comma-separated; `transfer.*` for a prefix), `outlet`,
    `correlation_id`, `replay` (recent events to send first, up to 500). Ops and admin keys
    see every event; an outlet key sees its own outlet's only."""
    state: GatewayState = request.app.state.gateway
    hub: EventHub | None = request.app.state.hub
    rid = request_id_of(request)
    try:
        principal = await authenticate(request, state)
        if principal.role == "supplier":
            raise GatewayError(403, "forbidden", "the live event stream is for ops and outlets")
        if hub is None:
            raise GatewayError(503, "events_unavailable", "live events are turned off")
        q = request.query_params
        outlet = q.get("outlet")
        if principal.role == "outlet":
            if outlet and outlet != principal.subject:
                raise GatewayError(403, "not_your_outlet", "this key belongs to another outlet")
            outlet = principal.subject
        asked = count_of(q.get("replay", "0"))
        if asked is None:
            raise GatewayError(422, "invalid", "replay must be a whole number", "replay")
        replay = min(asked, MAX_REPLAY)
        filters = Filters.parse(q.get("type"), outlet, q.get("correlation_id"))
        # Every stream costs a socket and a share of each event's fan-out on the loop. A
        # key at its limit loses its oldest stream to the new one rather than being
        # refused: a link that went half-open (a laptop changing networks) is never heard
        # closing by the server, and would hold its place for good.
        mine = hub.streams_of(principal.key_id)
        for old in mine[: max(0, len(mine) - state.settings.events_streams_per_key + 1)]:
            old.replace()
        if len(hub.subscribers) >= state.settings.events_max_streams:
            raise GatewayError(
                503, "too_many_streams", "the gateway holds all the live streams it can"
            )
    except GatewayError as exc:
        return error_response(exc, rid)

    heartbeat = state.settings.events_heartbeat_s
    token = token_of(request.scope["headers"]) or ""
    sub = hub.subscribe(filters, owner=principal.key_id)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n" + sse_comment("connected")
            yield sse_notice("status", hub.status())
            for past in hub.backlog(filters, replay):
                yield sse(past)
            reported = 0
            loop = asyncio.get_running_loop()
            check_at = loop.time() + heartbeat
            while True:
                event: dict[str, Any] | None
                try:
                    event = await asyncio.wait_for(sub.queue.get(), heartbeat)
                except TimeoutError:
                    event = None
                # A key revoked while its stream is open: the stream ends with it (within a
                # heartbeat and the key cache), as every request would; busy or idle.
                if loop.time() >= check_at:
                    check_at = loop.time() + heartbeat
                    if await state.keys.authenticate(token) is None:
                        yield sse_notice("revoked", {"reason": "the API key was revoked"})
                        return
                if event is None:
                    yield sse_comment("ping")
                    continue
                if event is REPLACED:
                    yield sse_notice("replaced", {"reason": "a newer stream of this key"})
                    return
                if sub.dropped != reported:
                    reported = sub.dropped
                    yield sse_notice("dropped", {"dropped": reported})
                yield sse(event)
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            "x-request-id": rid,
        },
    )
