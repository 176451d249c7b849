"""Health and readiness of the gateway and the services behind it."""

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..config import GatewaySettings

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "service": "gateway"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when every service behind the gateway says it is ready."""
    settings: GatewaySettings = request.app.state.settings
    client: httpx.AsyncClient = request.app.state.client

    async def probe(url: str) -> dict[str, Any]:
        try:
            resp = await client.get(f"{url}/readyz", timeout=3.0)
            body: dict[str, Any] = resp.json()
            return body
        except (httpx.HTTPError, ValueError) as exc:
            return {"status": "unreachable", "error": type(exc).__name__}

    names = list(settings.services())
    results = await asyncio.gather(*(probe(u) for u in settings.services().values()))
    services = dict(zip(names, results, strict=True))
    ready = all(r.get("status") == "ready" for r in results)
    hub = getattr(request.app.state, "hub", None)
    return JSONResponse(
        status_code=200 if ready else 503,
        content={
            "status": "ready" if ready else "not_ready",
            "services": services,
            # Informational: the live view does not decide readiness.
            "events": hub.status() if hub is not None else {"enabled": False},
        },
    )
