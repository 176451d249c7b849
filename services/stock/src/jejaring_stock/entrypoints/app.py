from fastapi import FastAPI

from jejaring_shared.app import ServiceDefinition, create_service_app
from jejaring_shared.contracts.topics import STOCK_EVENTS

from ..api.routes import router
from ..config import StockSettings


def create_app(settings: StockSettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_stock.entrypoints.app:create_app --factory`."""
    definition = ServiceDefinition(
        name="stock",
        migrations_package="jejaring_stock.migrations",
        routers=[router],
        topics=[STOCK_EVENTS],
    )
    return create_service_app(definition, settings or StockSettings())
