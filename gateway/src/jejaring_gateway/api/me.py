"""GET /api/v1/me: who a key speaks for, answered by the gateway alone.

The dashboard signs in with it: a check that needs no service up (signing in to watch an
outage must not depend on the service that is down) and that only a key the gateway
knows passes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import GatewayError, error_response
from .proxy import GatewayState, authenticate, request_id_of


async def whoami(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    rid = request_id_of(request)
    try:
        principal = await authenticate(request, state)
    except GatewayError as exc:
        return error_response(exc, rid)
    return JSONResponse(
        {"key_id": principal.key_id, "role": principal.role, "subject": principal.subject},
        headers={"x-request-id": rid, "cache-control": "no-store"},
    )
