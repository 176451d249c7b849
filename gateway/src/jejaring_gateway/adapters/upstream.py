"""Pooled HTTP client to the services."""

from __future__ import annotations

import asyncio
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpcore
import httpx

from ..config import GatewaySettings
from .netbackend import AsyncioBackend

RETRY_BACKOFF_S = (0.05, 0.2, 0.5, 1.0, 1.0)
KEEPALIVE_EXPIRY_S = 4.0


class UpstreamClient(httpx.AsyncClient):
    """httpx's client, which also keeps its transport at hand for `send`."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self.transport = transport


def make_client(
    settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None
) -> UpstreamClient:
    """One client for every service (connections are pooled per host)."""
    headers = {}
    if settings.internal_token is not None:
        headers["x-internal-token"] = settings.internal_token.get_secret_value()
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=min(
            settings.upstream_max_keepalive, settings.upstream_max_connections
        ),
        # Below uvicorn's 5 s keep-alive in the services: a connection the service
        # is closing must not be picked for the next request (a 502 under load).
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    return UpstreamClient(
        # One client serves every caller: a cookie a service set must never ride along on
        # someone else's request. (No service sets one today.)
        cookies=_no_cookies(),
        timeout=httpx.Timeout(
            settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
        ),
        limits=limits,
        headers=headers,
        follow_redirects=False,
        transport=transport if transport is not None else pooled_transport(limits),
    )


def _no_cookies() -> CookieJar:
    # Given to httpx as the jar itself (an httpx.Cookies would be copied into a new jar
    # with the default policy).
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def pooled_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's own transport, its connection pool on plain asyncio streams (netbackend.py).

    httpx does not take a network backend as an argument, so the pool it built is replaced
    by one with the same settings (httpx 0.28; tests/unit/test_gateway_upstream.py checks
    that the pool is this one). As with any transport given explicitly, httpx reads no
    proxy settings from the environment: the services are reached directly."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),  # as httpx's own (SSL_CERT_FILE honoured)
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport


async def send(
    client: UpstreamClient, request: httpx.Request, *, retries: int, stream: bool = True
) -> httpx.Response:
    """Send; GET and HEAD are retried when the connection failed before any answer came:
    refused, or a pooled connection the service closed or reset as the request went out.
    A streamed body may be partly sent by then and cannot be sent again: only a refused
    connection (nothing read yet) is retried for it.

    The request goes straight to the transport (`client.build_request` made it, with the
    client's headers and timeouts): a proxy has no use for the client's auth, redirect and
    cookie handling, about a tenth of the gateway's CPU per proxied request."""
    attempt = 0
    whole_body = isinstance(request.stream, httpx.ByteStream)  # as built, before any send
    while True:
        try:
            response = await client.transport.handle_async_request(request)
            response.request = request
            if not stream:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            return response
        except (
            httpx.ConnectError,
            httpx.RemoteProtocolError,
            httpx.ReadError,
            httpx.WriteError,
        ) as exc:
            resendable = whole_body or isinstance(exc, httpx.ConnectError)
            if request.method not in ("GET", "HEAD") or attempt >= retries or not resendable:
                raise
            await asyncio.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
            attempt += 1
