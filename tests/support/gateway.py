"""The gateway in-process in front of the real services (also in-process), for tests.

`gateway_stack` starts the services with the internal credential set, routes the
gateway's pooled client to them through an in-process transport, and hands back a client
for the gateway and a way to issue keys.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_gateway.adapters.keystore import KeyStore
from jejaring_gateway.config import GatewaySettings
from jejaring_gateway.domain.identity import parse_role
from jejaring_gateway.entrypoints.app import create_app as create_gateway
from jejaring_shared.settings import KafkaSettings

log = logging.getLogger(__name__)
TOKEN = "internal-test-token-0123456789"
ALL_SERVICES = ("catalog", "stock", "transfer", "supplier")


class RoutingTransport(httpx.AsyncBaseTransport):
    """Sends each request to the in-process app named by its host; unknown hosts fail to
    connect (like a service that is down)."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        # A service's unhandled error is its 500 answer, as over a network, not a raise.
        self.transports = {
            h: httpx.ASGITransport(app=a, raise_app_exceptions=False) for h, a in apps.items()
        }

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transports.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"{request.url.host} is down", request=request)
        return await transport.handle_async_request(request)


def service_app(name: str, db_url: str, bootstrap: str) -> FastAPI:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0)
    common: dict[str, Any] = {
        "database_url": db_url,
        "kafka": kafka,
        "relay_idle_poll_s": 0.1,
        "internal_token": TOKEN,
    }
    if name == "catalog":
        from jejaring_catalog.config import CatalogSettings
        from jejaring_catalog.entrypoints.app import create_app as catalog

        return catalog(CatalogSettings(**common))
    if name == "stock":
        from jejaring_stock.config import StockSettings
        from jejaring_stock.entrypoints.app import create_app as stock

        return stock(StockSettings(**common))
    if name == "transfer":
        from jejaring_transfer.config import TransferSettings
        from jejaring_transfer.entrypoints.app import create_app as transfer

        return transfer(TransferSettings(**common))
    from jejaring_supplier.config import SupplierSettings
    from jejaring_supplier.entrypoints.app import create_app as supplier

    return supplier(SupplierSettings(**common, webhook_poll_s=0.2))


@dataclass
class GatewayStack:
    client: httpx.AsyncClient
    app: FastAPI
    keys: KeyStore
    services: dict[str, FastAPI]
    tokens: dict[str, str] = field(default_factory=dict)

    async def key(self, role: str) -> str:
        """A key for the role (one per role, issued on first use)."""
        if role not in self.tokens:
            kind, subject = parse_role(role)
            _record, self.tokens[role] = await self.keys.issue(kind, subject, f"test {role}")
        return self.tokens[role]

    async def headers(self, role: str) -> dict[str, str]:
        return {"authorization": f"Bearer {await self.key(role)}"}

    async def call(self, role: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**(await self.headers(role)), **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)


@contextlib.asynccontextmanager
async def gateway_stack(
    tmp_path: Path,
    bootstrap: str,
    services: tuple[str, ...] = ALL_SERVICES,
    *,
    events: bool = False,
    configure: Callable[[GatewaySettings], None] | None = None,
    **settings: Any,
) -> AsyncIterator[GatewayStack]:
    async with contextlib.AsyncExitStack() as stack:
        apps: dict[str, FastAPI] = {}
        for name in services:
            app = service_app(name, f"sqlite+aiosqlite:///{tmp_path}/{name}.db", bootstrap)
            await stack.enter_async_context(
                LifespanManager(app, startup_timeout=90, shutdown_timeout=30)
            )
            apps[name] = app
        urls: dict[str, Any] = {f"{n}_url": f"http://{n}.internal" for n in ALL_SERVICES}
        gw_settings = GatewaySettings(
            **urls,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
            internal_token=TOKEN,
            events_enabled=events,
            kafka=KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0),
            **settings,
        )
        if configure is not None:
            configure(gw_settings)
        gateway = create_gateway(
            gw_settings, transport=RoutingTransport({f"{n}.internal": a for n, a in apps.items()})
        )
        await stack.enter_async_context(
            LifespanManager(gateway, startup_timeout=60, shutdown_timeout=30)
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw")
        )
        yield GatewayStack(client, gateway, gateway.state.gateway.keys, apps)


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve an app whose lifespan already runs over real HTTP on a free port (uvicorn in
    this event loop); yields its base URL."""
    import asyncio

    import uvicorn

    from jejaring_devtools.paths import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
