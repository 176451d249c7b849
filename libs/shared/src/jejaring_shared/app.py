"""The service factory: every Jejaring service is built the same way.

It wires settings, the database (migrated on start), the outbox relay, the consumers,
health, readiness, metrics, the AsyncAPI document and JSON errors. A service supplies its
routers and its consumer handlers; nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from . import migrations
from .asyncapi import build_asyncapi
from .consumer import ConsumerRunner, Handler
from .contracts import REGISTRY, EventRegistry
from .contracts.topics import dead_letter_topic
from .db import UnitOfWork, UnitOfWorkFactory, create_engine, read_connection
from .errors import ErrorBody, ErrorDetail, install_error_handlers
from .kafka import ensure_topics
from .metrics import BackboneMetrics
from .outbox import OutboxRelay
from .settings import ServiceSettings
from .tasks import finish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerSpec:
    group_id: str
    topics: Sequence[str]
    handlers: Mapping[str, Handler]


@dataclass
class Runtime:
    """What routes and handlers reach through `app.state.runtime`."""

    settings: ServiceSettings
    engine: AsyncEngine
    uow: UnitOfWorkFactory
    relay: OutboxRelay
    metrics: BackboneMetrics
    consumers: list[ConsumerRunner] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    migrations_package: str
    routers: Sequence[APIRouter] = ()
    consumers: Sequence[ConsumerSpec] = ()
    topics: Sequence[str] = ()
    """Topics this service writes to (created on start if missing)."""
    description: str = ""
    registry: EventRegistry = REGISTRY
    background: Sequence[Callable[[Runtime], Coroutine[Any, Any, None]]] = ()
    """Long-running tasks of the service (sweepers, webhook senders); started after the
    consumers, cancelled on shutdown. Each must loop until cancelled."""
    after_db_commit: Callable[[Any], None] | None = None
    """A seam for fault-injection tests: called after each consumer's database commit."""


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# The dependencies are `async def` though they never await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hand-off on every request for nothing.
async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def get_uow(request: Request) -> UnitOfWork:
    """A fresh unit of work per request; the route commits it or it rolls back. A GET or
    HEAD changes nothing, so its unit is read-only."""
    return runtime_of(request).uow(read_only=request.method in ("GET", "HEAD"))


UoW = Annotated[UnitOfWork, Depends(get_uow)]


def create_service_app(definition: ServiceDefinition, settings: ServiceSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        await migrations.upgrade(engine, definition.migrations_package)
        metrics = BackboneMetrics(definition.name)
        relay = OutboxRelay(
            engine,
            settings.kafka,
            name=definition.name,
            metrics=metrics,
            batch_size=settings.relay_batch_size,
            idle_poll_s=settings.relay_idle_poll_s,
            max_backoff_s=settings.relay_max_backoff_s,
            retention=timedelta(hours=settings.outbox_retention_hours),
        )
        uow = UnitOfWorkFactory(
            engine, source=definition.name, on_commit=relay.wake, registry=definition.registry
        )
        runtime = Runtime(settings=settings, engine=engine, uow=uow, relay=relay, metrics=metrics)
        for spec in definition.consumers:
            runtime.consumers.append(
                ConsumerRunner(
                    group_id=spec.group_id,
                    topics=spec.topics,
                    handlers=spec.handlers,
                    uow_factory=uow,
                    kafka=settings.kafka,
                    metrics=metrics,
                    max_attempts=settings.consumer_max_attempts,
                    max_batch=settings.consumer_max_batch,
                    inbox_retention=timedelta(hours=settings.inbox_retention_hours),
                    registry=definition.registry,
                    after_db_commit=definition.after_db_commit,
                )
            )
        app.state.runtime = runtime
        topics = {
            *definition.topics,
            *(t for spec in definition.consumers for t in spec.topics),
            *(dead_letter_topic(spec.group_id) for spec in definition.consumers),
        }
        try:
            await ensure_topics(settings.kafka, topics)
        except Exception as exc:
            # Kafka may be down at start; writes still succeed and the relay catches up.
            log.warning("%s: could not ensure topics (%s); continuing", definition.name, exc)
        relay.start()
        for runner in runtime.consumers:
            runner.start()
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(job(runtime), name=f"{definition.name}-background")
            for job in definition.background
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*(finish(t, 4.0) for t in tasks))
            # Bounded: shutdown must finish even when the broker is gone.
            await asyncio.gather(*(r.stop(4.0) for r in runtime.consumers))
            await relay.stop(4.0)
            await engine.dispose()

    app = FastAPI(
        title=f"Jejaring {definition.name}",
        description=definition.description,
        version="0.1.0",
        lifespan=freezing_gc(lifespan),
        # A trailing slash is a 404 like any unknown path: Starlette's redirect would send
        # the client, through the gateway, to the service's own (internal) address.
        redirect_slashes=False,
    )
    install_error_handlers(app)
    app.add_middleware(RefuseNul)
    if settings.internal_token is not None:
        app.add_middleware(
            InternalCredential, token=settings.internal_token.get_secret_value().encode()
        )
    app.include_router(_ops_router(definition))
    for router in definition.routers:
        app.include_router(router)
    return app


def freezing_gc(lifespan: Any) -> Any:
    """Once started, move what start-up built (modules, app, engine, clients) out of the
    garbage collector's sight: requests allocate enough to trigger full collections, and
    each one walked all of it (tens of ms, more than a request's own work, in the p99)."""

    @contextlib.asynccontextmanager
    async def frozen(app: FastAPI) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            gc.freeze()
            try:
                yield state
            finally:
                gc.unfreeze()  # collectable again once the app stops (tests start many)

    return frozen


INTERNAL_TOKEN_HEADER = "x-internal-token"  # noqa: S105 (a header name)
INTERNAL_TOKEN_HEADER_BYTES = INTERNAL_TOKEN_HEADER.encode()
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/asyncapi.json"})
"""Routes that answer without the internal credential (probes, scrapes, the event catalog)."""


def error_bytes(code: str, message: str) -> bytes:
    """A JSON error body, for middleware that answers before any route."""
    detail = ErrorDetail(code=code, message=message)
    return json.dumps(ErrorBody(error=detail, details=[detail]).model_dump(mode="json")).encode()


async def send_json(
    send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer a pure ASGI request with a JSON body."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


_REFUSAL = error_bytes(
    "internal_credential_required", "this service is reached through the gateway only"
)
_NUL_REFUSAL = error_bytes("invalid", "the URL may not contain a NUL character")


class RefuseNul:
    """Pure ASGI middleware: a NUL (%00) in the path or query is refused (400 `invalid`).
    Ids and filters in URLs reach the database as text, and PostgreSQL cannot hold NUL in
    text: the query failed as if the database were down (503)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            await send_json(send, 400, _NUL_REFUSAL)
            return
        await self.app(scope, receive, send)


class InternalCredential:
    """Pure ASGI middleware: refuses requests without `x-internal-token: <token>` (401).

    Compared in constant time; health, readiness, metrics and the AsyncAPI document stay
    open. Installed only when the service's `internal_token` setting is set.
    """

    def __init__(self, app: Any, token: bytes) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == INTERNAL_TOKEN_HEADER_BYTES:
                given = value
                break
        if hmac.compare_digest(given, self.token):
            await self.app(scope, receive, send)
            return
        await send_json(send, 401, _REFUSAL)


STALL_S = 180.0
"""A relay failing, or a consumer not getting through a fetch, for this long makes the
service not ready: each retries on its own with backoff (5 s at most), and a message is
tried at most 5 times before it is dead-lettered, so this long means stuck."""


def _ops_router(definition: ServiceDefinition) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok", "service": definition.name}

    @router.get("/readyz")
    async def readyz(runtime: Annotated[Runtime, Depends(get_runtime)]) -> JSONResponse:
        """Readiness: database reachable, Kafka reachable, the relay and every consumer
        making progress (not failing or silent for `STALL_S`); reports the outbox backlog."""
        checks: dict[str, Any] = {}
        try:
            # The connection too: with PostgreSQL down, getting one waits for the pool.
            async with asyncio.timeout(2.0), read_connection(runtime.engine) as conn:
                await conn.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
            checks["outbox_backlog"] = await asyncio.wait_for(runtime.relay.backlog(), 2.0)
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        checks["kafka"] = "ok" if await runtime.relay.check_kafka(2.0) else "unavailable"
        now = time.monotonic()
        relay = runtime.relay
        failing = None if relay.failing_since is None else now - relay.failing_since
        checks["relay"] = (
            "ok" if failing is None else f"failing for {failing:.0f} s: {relay.last_error}"
        )
        checks["consumers"] = {
            r.group_id: {
                "assigned": len(r.assigned),
                "connected": r.kafka_ok,
                "polled_s_ago": round(now - r.last_poll, 1) if r.last_poll else None,
                "progressed_s_ago": round(now - r.last_progress, 1) if r.last_progress else None,
            }
            for r in runtime.consumers
        }
        stalled = (failing is not None and failing > STALL_S) or any(
            r.last_progress and now - r.last_progress > STALL_S for r in runtime.consumers
        )
        ready = checks["database"] == "ok" and checks["kafka"] == "ok" and not stalled
        return JSONResponse(
            status_code=200 if ready else 503,
            content={
                "status": "ready" if ready else "not_ready",
                "service": definition.name,
                "checks": checks,
            },
        )

    @router.get("/metrics")
    async def metrics(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/asyncapi.json")
    async def asyncapi() -> dict[str, Any]:
        """The event catalog of the whole system (AsyncAPI 3.0)."""
        return build_asyncapi(definition.registry)

    return router
