"""The gateway's own errors, in the services' JSON shape {error: {code, message, field}}."""

from __future__ import annotations

import json

from starlette.responses import Response


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_response(exc: GatewayError, request_id: str | None = None) -> Response:
    detail = {"code": exc.code, "message": exc.message, "field": exc.field}
    body = json.dumps({"error": detail, "details": [detail]}).encode()
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return Response(body, exc.status, headers=headers, media_type="application/json")
