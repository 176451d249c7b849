import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from jejaring_shared.errors import install_error_handlers

from ..adapters.upstream import make_client
from ..api.ops import router as ops_router
from ..config import GatewaySettings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_gateway.entrypoints.app:create_app --factory`."""
    settings = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.client = make_client(settings)
        try:
            yield
        finally:
            await app.state.client.aclose()

    app = FastAPI(title="Jejaring", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(ops_router)
    return app
