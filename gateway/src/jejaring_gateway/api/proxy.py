"""The proxy: /api/v1/... authenticated, authorised, limited and sent to the owning service.

Order for each request: request id, API key, rate limit, owning service, access rule,
body (counted while it streams in; 413 past the limit), ownership checks, forward (pooled
client; GET/HEAD retried when no answer came), answer streamed back with the request id.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from jejaring_shared.app import error_bytes, send_json

from ..adapters import upstream
from ..adapters.keystore import KeyStore
from ..config import GatewaySettings
from ..domain import access
from ..domain.access import Check
from ..domain.identity import Principal
from ..domain.ratelimit import RateLimiter
from .errors import GatewayError, error_response
from .metrics import resource_of

log = logging.getLogger(__name__)

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
BAD_PATH_RE = re.compile(r"%(2f|2e|5c|00)|\\", re.IGNORECASE)
REQUEST_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "x-api-key",
        "x-internal-token",
        "x-actor",
        "x-request-id",
        "cookie",
        "accept-encoding",
        "x-forwarded-for",
    }
)
RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "server",
        "date",
        "x-request-id",
    }
)
BUFFER_RESPONSE_BYTES = 256 * 1024
"""Answers up to this size (by Content-Length) are read whole; longer ones are streamed."""


@dataclass
class GatewayState:
    settings: GatewaySettings
    client: upstream.UpstreamClient
    keys: KeyStore
    limiter: RateLimiter
    strangers: RateLimiter
    """Unknown or revoked keys per client address."""


def request_id_of(request: Request) -> str:
    given = request.headers.get("x-request-id")
    if given and REQUEST_ID_RE.match(given):
        return given
    return uuid.uuid4().hex


async def reject_flood(app_state: Any, scope: Any, send: Any) -> bool:
    """Answer 429 for a key known (cached) and over its rate, before FastAPI's own layers
    run, so a flooding key takes little from the others. True when it answered. A key that
    passes is handed on in scope["state"] so it is not checked twice."""
    if scope["type"] != "http" or not scope["path"].startswith("/api/v1/"):
        return False
    state: GatewayState | None = getattr(app_state, "gateway", None)
    token = token_of(scope["headers"])
    if state is None or not token:
        return False
    principal = state.keys.cached(token)
    if not isinstance(principal, Principal):
        return False
    wait = state.limiter.take(principal.key_id)
    if wait > 0:
        await _send_429(send, wait, scope["headers"])
        metrics = getattr(app_state, "metrics", None)
        if metrics is not None:
            metrics.count(resource_of(scope["path"]), scope["method"], 429)
        return True
    scope.setdefault("state", {})["principal"] = principal
    return False


def token_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key from `X-API-Key` (preferred) or `Authorization: Bearer <key>`."""
    bearer = None
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1")
        if name == b"authorization" and bearer is None and value[:7].lower() == b"bearer ":
            bearer = value[7:].decode("latin-1").strip()
    return bearer


_BODY_429 = error_bytes("rate_limited", "too many requests for this key; slow down")


async def _send_429(send: Any, wait: float, headers: list[tuple[bytes, bytes]]) -> None:
    rid = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), "")
    if not REQUEST_ID_RE.match(rid):
        rid = uuid.uuid4().hex
    extra = [
        (b"retry-after", str(RateLimiter.retry_after(wait)).encode()),
        (b"x-request-id", rid.encode()),
    ]
    await send_json(send, 429, _BODY_429, extra)


async def authenticate(request: Request, state: GatewayState) -> Principal:
    checked = request.scope.get("state", {}).get("principal")
    if isinstance(checked, Principal):
        return checked  # reject_flood authenticated and rate-limited it already
    token = token_of(request.scope["headers"])
    if not token:
        raise GatewayError(
            401,
            "api_key_required",
            "send your API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            headers={"www-authenticate": "Bearer"},
        )
    # A client sending key after unknown key (guessing, or misconfigured) is slowed down
    # before it costs a key-store read each: a known key is rate-limited by its id, an
    # unknown one had no limit at all.
    # Taken before the read (so requests in parallel cannot all pass before any failure
    # is counted) and given back when the key is known.
    address = request.client.host if request.client else "-"
    wait = state.strangers.take(address)
    if wait > 0:
        raise GatewayError(
            429,
            "too_many_unknown_keys",
            "too many unknown or revoked keys from this address; slow down",
            headers={"retry-after": str(RateLimiter.retry_after(wait))},
        )
    principal = await state.keys.authenticate(token)
    if principal is not None:
        state.strangers.give_back(address)
    else:
        raise GatewayError(
            401,
            "invalid_api_key",
            "the API key is unknown or revoked",
            headers={"www-authenticate": "Bearer"},
        )
    wait = state.limiter.take(principal.key_id)
    if wait > 0:
        raise GatewayError(
            429,
            "rate_limited",
            "too many requests for this key; slow down",
            headers={"retry-after": str(RateLimiter.retry_after(wait))},
        )
    return principal


async def proxy(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    rid = request_id_of(request)
    try:
        principal = await authenticate(request, state)
        return await _forward(request, state, principal, rid)
    except GatewayError as exc:
        return error_response(exc, rid)
    except ClientDisconnect:
        return Response(status_code=499)


def _query(request: Request, settings: GatewaySettings, force: dict[str, str]) -> str:
    raw: str = request.scope.get("query_string", b"").decode("latin-1")
    if not force and not raw:
        return raw
    # Always parsed, never searched as text: `li%6Dit=500` is `limit` to the service.
    items = parse_qsl(raw, keep_blank_values=True)
    out: list[tuple[str, str]] = []
    for name, value in items:
        if name in force:
            continue
        if name in ("limit", "offset"):
            # Plain ASCII digits only: the services' parser also takes "+500", " 500",
            # "5_00" and "500.0", which passed the page-size cap below unchanged.
            number = access.count_of(value)
            if number is None:
                too_long = value.isascii() and value.isdigit()
                raise GatewayError(
                    422,
                    "too_large" if too_long else "invalid",
                    f"{name} must be a whole number in digits",
                    name,
                )
            if name == "limit" and number > settings.max_page_size:
                value = str(settings.max_page_size)
        out.append((name, value))
    out.extend(force.items())
    return urlencode(out)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, counted as it arrives: never more than `limit` bytes are held."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, "payload_too_large", f"the body is larger than {limit:,} bytes", headers={}
    )


async def _counted(request: Request, limit: int, flag: list[bool]) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            flag.append(True)
            raise _TooLarge
        yield chunk


def _upstream_error(exc: Exception, service: str) -> GatewayError:
    if isinstance(exc, httpx.ConnectError):
        return GatewayError(503, "upstream_unavailable", f"the {service} service is unavailable")
    if isinstance(exc, httpx.TimeoutException):
        return GatewayError(
            504, "upstream_timeout", f"the {service} service did not answer in time"
        )
    return GatewayError(502, "bad_gateway", f"the {service} service failed to answer")


async def _get_json(
    state: GatewayState, service: str, path: str, rid: str
) -> tuple[int, dict[str, Any] | None]:
    url = state.settings.services()[service] + path
    try:
        resp = await upstream.send(
            state.client,
            state.client.build_request("GET", url, headers={"x-request-id": rid}),
            retries=state.settings.get_retries,
            stream=False,
        )
    except httpx.HTTPError as exc:
        raise _upstream_error(exc, service) from exc
    try:
        body = resp.json()
    except ValueError:
        body = None
    return resp.status_code, body if isinstance(body, dict) else None


def _unverifiable(status: int, body: dict[str, Any] | None, what: str) -> GatewayError:
    """Why an ownership check could not be made, told as it is: transfer's own 4xx (a bad
    id) passes through; its failure is the gateway's 502/503, not a 403 that clients would
    take for a refusal and not retry. Anything else stays closed (403)."""
    error = (body or {}).get("error")
    if status in (401, 403):  # the gateway's own credential refused: not the client's doing
        return GatewayError(502, "bad_gateway", "the transfer service refused the gateway")
    if 400 <= status < 500 and isinstance(error, dict) and isinstance(error.get("code"), str):
        field = error.get("field")
        return GatewayError(
            status,
            error["code"],
            str(error.get("message", "")),
            field if isinstance(field, str) else None,
        )
    if status == 503:
        return GatewayError(503, "upstream_unavailable", "the transfer service is unavailable")
    if status >= 500:
        return GatewayError(502, "bad_gateway", "the transfer service failed to answer")
    return GatewayError(403, "ownership_unverifiable", f"could not check who owns the {what}")


async def _check_restock_owner(state: GatewayState, me: str, request_id: str, rid: str) -> None:
    status, body = await _get_json(state, "transfer", f"/api/v1/restock-requests/{request_id}", rid)
    if status == 200 and body is not None and body.get("outlet_id") == me:
        return
    if status in (200, 404):
        raise GatewayError(
            404, "request_not_found", f"no restock request {request_id!r}", "request_id"
        )
    raise _unverifiable(status, body, "request")


async def _check_leg(state: GatewayState, me: str, leg_id: str, check: Check, rid: str) -> None:
    status, body = await _get_json(state, "transfer", f"/api/v1/transfers/{leg_id}", rid)
    if status == 404:
        raise GatewayError(404, "leg_not_found", f"no transfer leg {leg_id!r}", "leg_id")
    if status != 200 or body is None or "outlet_id" not in body:
        raise _unverifiable(status, body, "leg")
    source = body.get("source_id") if body.get("source_kind") == "outlet" else None
    ok = {
        Check.LEG_SOURCE: source == me,
        Check.LEG_DESTINATION: body.get("outlet_id") == me,
        Check.LEG_EITHER: me in (source, body.get("outlet_id")),
    }[check]
    if not ok:
        if check is Check.LEG_EITHER:
            raise GatewayError(404, "leg_not_found", f"no transfer leg {leg_id!r}", "leg_id")
        raise GatewayError(403, "not_your_leg", "this leg is not your outlet's to act on")


def _check_restock_body(body: bytes, me: str) -> bytes:
    """The outlet_id in the body must be the key's; the body is forwarded as checked."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body  # the service refuses it (malformed_json); nothing can be created
    if isinstance(parsed, dict) and "outlet_id" in parsed:
        if parsed["outlet_id"] != me:
            raise GatewayError(
                403, "not_your_outlet", "a restock request is for your own outlet", "outlet_id"
            )
        return json.dumps(parsed).encode()  # what was checked is what the service reads
    return body


def _request_headers(request: Request, principal: Principal, rid: str) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in request.headers.items() if k not in REQUEST_DROP]
    headers.append(("x-request-id", rid))
    headers.append(("x-actor", f"{principal.name}#{principal.key_id}"[:100]))
    headers.append(("accept-encoding", "identity"))
    if request.client is not None:
        headers.append(("x-forwarded-for", request.client.host))
    return headers


def _response_headers(resp: httpx.Response, rid: str) -> list[tuple[bytes, bytes]]:
    out = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in resp.headers.multi_items()
        if k.lower() not in RESPONSE_DROP
    ]
    out.append((b"x-request-id", rid.encode()))
    return out


async def _forward(
    request: Request, state: GatewayState, principal: Principal, rid: str
) -> Response:
    settings = state.settings
    path = request.scope["path"]
    raw_path = request.scope.get("raw_path") or path.encode()
    segs = access.segments(path)
    if BAD_PATH_RE.search(raw_path.decode("latin-1")) or any(s in (".", "..") for s in segs):
        raise GatewayError(400, "invalid_path", "the path has encoded or relative segments")
    service = access.owner(segs)
    if service is None:
        raise GatewayError(404, "route_not_found", f"no API route {path}")
    decision = access.decide(principal, request.method, segs)
    if not decision.allowed:
        raise GatewayError(decision.status, decision.code, decision.message)

    # The body: counted while it streams in, never held past its limit.
    upload = access.is_upload(segs)
    limit = settings.max_upload_bytes if upload else settings.max_body_bytes
    declared = request.headers.get("content-length")
    size = access.count_of(declared)
    digits = declared is not None and declared.isascii() and declared.isdigit()
    if digits and (size is None or size > limit):  # None: more digits than any limit
        raise _too_large(limit)
    has_body = declared not in (None, "0") or "transfer-encoding" in request.headers
    too_large: list[bool] = []
    content: bytes | AsyncIterator[bytes] | None = None
    if has_body:
        if upload and decision.check is Check.NONE:
            content = _counted(request, limit, too_large)
        else:
            content = await _read_body(request, limit)

    me = principal.subject or ""
    if decision.check is Check.RESTOCK_BODY and isinstance(content, bytes):
        content = _check_restock_body(content, me)
    elif decision.check is Check.RESTOCK_OWNER:
        await _check_restock_owner(state, me, segs[1], rid)
    elif decision.check in (Check.LEG_SOURCE, Check.LEG_DESTINATION, Check.LEG_EITHER):
        await _check_leg(state, me, segs[1], decision.check, rid)

    query = _query(request, settings, decision.force_query)
    url = settings.services()[service] + raw_path.decode("latin-1") + (f"?{query}" if query else "")
    headers = _request_headers(request, principal, rid)
    if isinstance(content, bytes):
        headers.append(("content-length", str(len(content))))
    elif content is not None and declared is not None and declared.isdigit():
        headers.append(("content-length", declared))
    timeout = (
        httpx.Timeout(settings.slow_timeout_s, connect=settings.upstream_connect_timeout_s)
        if access.is_slow(request.method, segs)
        else httpx.USE_CLIENT_DEFAULT
    )
    upstream_request = state.client.build_request(
        request.method, url, headers=headers, content=content, timeout=timeout
    )
    try:
        resp = await upstream.send(
            state.client, upstream_request, retries=settings.get_retries, stream=True
        )
    except Exception as exc:
        if too_large:
            raise _too_large(limit) from None
        if isinstance(exc, httpx.HTTPError):
            log.warning("upstream %s failed: %r (request %s)", service, exc, rid)
            raise _upstream_error(exc, service) from exc
        raise
    return await _answer(resp, rid, decision.check, me)


async def _answer(resp: httpx.Response, rid: str, check: Check, me: str) -> Response:
    length = resp.headers.get("content-length")
    small = length is not None and length.isdigit() and int(length) <= BUFFER_RESPONSE_BYTES
    if small or check is Check.RESTOCK_RESPONSE:
        try:
            body = b"".join([chunk async for chunk in resp.aiter_raw()])
        except httpx.HTTPError as exc:
            raise _upstream_error(exc, "upstream") from exc
        finally:
            await resp.aclose()
        if check is Check.RESTOCK_RESPONSE and resp.status_code == 200:
            try:
                owner = json.loads(body).get("outlet_id")
            except (ValueError, AttributeError):
                owner = None
            if owner != me:
                raise GatewayError(404, "request_not_found", "no such restock request", "id")
        out = Response(body, resp.status_code)
        out.raw_headers = [
            *_response_headers(resp, rid),
            (b"content-length", str(len(body)).encode()),
        ]
        return out
    streamed = StreamingResponse(
        resp.aiter_raw(), resp.status_code, background=BackgroundTask(resp.aclose)
    )
    streamed.raw_headers = _response_headers(resp, rid)
    return streamed
