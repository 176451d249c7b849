import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from jejaring_shared.app import freezing_gc
from jejaring_shared.errors import install_error_handlers

from ..adapters.events import EventHub
from ..adapters.keystore import KeyStore
from ..adapters.upstream import make_client
from ..api.docs import OpenApiCache, docs_page, openapi_json
from ..api.errors import GatewayError, error_response
from ..api.events import event_stream
from ..api.me import whoami
from ..api.metrics import GatewayMetrics, MetricsMiddleware, metrics_endpoint
from ..api.ops import router as ops_router
from ..api.proxy import GatewayState, proxy, reject_flood, request_id_of
from ..config import GatewaySettings
from ..domain.ratelimit import RateLimiter

log = logging.getLogger(__name__)
PROXY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
EVENT_STREAM = "/api/v1/events/stream"
ME = "/api/v1/me"
OWN_PATHS = frozenset({EVENT_STREAM, ME})  # /api/v1 paths the gateway answers itself


class GatewayApp(FastAPI):
    """FastAPI with the flood check in front of everything, its own middleware included:
    at 1,000 refused requests a second, each layer skipped is CPU the other keys keep.

    Proxied requests (`/api/v1/...`, the event stream aside) then go straight to the proxy
    behind the metrics middleware: FastAPI's middleware stack and router, which they never
    use (the proxy answers its own errors), were about a sixth of the CPU per request."""

    proxied: Any = None
    """The proxy as an ASGI app behind the metrics middleware (set by create_app)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            rejected = await reject_flood(self.state, scope, send)
        except Exception:
            # Outside FastAPI's error handling: log it and let the full path answer.
            log.exception("flood check failed; the request goes the usual way")
            rejected = False
        if rejected:
            return
        if self.proxied is not None and _is_proxied(scope):
            scope["app"] = self  # what Starlette would set: the proxy reads app.state
            await self.proxied(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _is_proxied(scope: Any) -> bool:
    if scope["type"] != "http":
        return False
    path: str = scope["path"]
    return (
        path.startswith("/api/v1/") and path not in OWN_PATHS and scope["method"] in PROXY_METHODS
    )


async def _proxy_asgi(scope: Any, receive: Any, send: Any) -> None:
    request = Request(scope, receive)
    try:
        response = await proxy(request)
    except Exception as exc:
        # The app's handlers answer as on FastAPI's path (install_error_handlers: a database
        # error, as when the key store is down, is a 503 there, not a 500).
        handler = _handler_for(scope["app"], exc)
        if handler is None:
            log.exception("proxy failed: %s %s", scope["method"], scope["path"])
            response = error_response(
                GatewayError(500, "internal_error", "internal error"), request_id_of(request)
            )
        else:
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            # Every answer of the proxy carries the request id, errors included.
            response.headers["x-request-id"] = request_id_of(request)
    await response(scope, receive, send)


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    """The app's exception handler for `exc`, most specific class first, as Starlette's
    ExceptionMiddleware and ServerErrorMiddleware pick it."""
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler
    return None


def create_app(
    settings: GatewaySettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_gateway.entrypoints.app:create_app --factory`.

    `transport` lets tests put the services in the same process (httpx.ASGITransport)."""
    settings = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = await KeyStore.open(settings.database_url, settings.key_cache_s)
        client = make_client(settings, transport)
        app.state.settings = settings
        app.state.client = client
        app.state.gateway = GatewayState(
            settings=settings,
            client=client,
            keys=keys,
            limiter=RateLimiter(settings.rate_per_s, settings.rate_burst),
            strangers=RateLimiter(settings.failed_key_rate_per_s, settings.failed_key_burst),
        )
        app.state.openapi = OpenApiCache()
        hub: EventHub | None = None
        if settings.events_enabled:
            hub = EventHub(settings.kafka, settings.events_client_queue, settings.events_replay)
            hub.start()
        app.state.hub = hub
        try:
            yield
        finally:
            if hub is not None:
                await hub.stop()
            await client.aclose()
            await keys.close()

    app = GatewayApp(
        title="Jejaring gateway",
        version="0.1.0",
        lifespan=freezing_gc(lifespan),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(ops_router)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.add_route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)
    app.add_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    app.add_route(EVENT_STREAM, event_stream, methods=["GET"], include_in_schema=False)
    app.add_route(ME, whoami, methods=["GET"], include_in_schema=False)
    # Reached only by what _is_proxied leaves to FastAPI (under a root path, for instance).
    app.add_route("/api/v1/{path:path}", proxy, methods=PROXY_METHODS, include_in_schema=False)
    app.proxied = MetricsMiddleware(_proxy_asgi, metrics=metrics)
    static = resources.files("jejaring_gateway") / "static" / "dashboard"
    app.mount("/dashboard", StaticFiles(directory=str(static), html=True), name="dashboard")

    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    app.add_api_route("/", root, include_in_schema=False)
    return app
