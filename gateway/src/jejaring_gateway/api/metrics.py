"""Prometheus metrics of the gateway: what callers asked for and what they got.

A pure ASGI middleware behind reject_flood; the 429s reject_flood answers early are
counted there, with one cached counter, so a flooding key stays cheap. Paths are reduced
to their first segment under /api/v1 ("outlets", "restock-requests", ...) to keep the
label set small.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

from ..domain.access import OWNERS

_KNOWN_RESOURCES = frozenset({*OWNERS, "events"})
# Buckets in seconds: the gateway's own goal is a few ms added at p99.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def resource_of(path: str) -> str:
    """`/api/v1/outlets/o-1/sales` -> "outlets"; anything outside the API is "other"."""
    if not path.startswith("/api/v1/"):
        return "dashboard" if path.startswith("/dashboard") else "other"
    head = path[len("/api/v1/") :].split("/", 1)[0]
    return head if head in _KNOWN_RESOURCES else "other"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "jejaring_gateway_requests_total",
            "Requests answered, by resource, method and status",
            ["resource", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "jejaring_gateway_request_seconds",
            "Time from the request's arrival to the start of the response",
            ["resource"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "jejaring_gateway_in_flight", "Requests being handled", registry=self.registry
        )
        # Bound children, cached: labels() takes a lock and builds a key on every call, and
        # a flooding key must cost as little as possible.
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    def count(self, resource: str, method: str, status: int) -> None:
        key = (resource, method, str(status))
        child = self._counts.get(key)
        if child is None:
            child = self._counts[key] = self.requests.labels(*key)
        child.inc()

    def observe(self, resource: str, seconds: float) -> None:
        child = self._timers.get(resource)
        if child is None:
            child = self._timers[resource] = self.seconds.labels(resource)
        child.observe(seconds)


class MetricsMiddleware:
    """Behind reject_flood, which counts its own early 429s (see `count`)."""

    def __init__(self, app: Any, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        resource = resource_of(scope["path"])
        started = time.perf_counter()
        status = [0]

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self.metrics.observe(resource, time.perf_counter() - started)
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.in_flight.dec()
            # 0: the caller went away (or the app failed) before any response started.
            self.metrics.count(resource, scope["method"], status[0])


async def metrics_endpoint(request: Request) -> Response:
    metrics: GatewayMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
