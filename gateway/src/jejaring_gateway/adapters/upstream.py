"""Pooled HTTP client to the services."""

import httpx

from ..config import GatewaySettings


def make_client(settings: GatewaySettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.upstream_timeout_s, connect=2.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
