from fastapi import FastAPI

from jejaring_shared.app import ServiceDefinition, create_service_app
from jejaring_shared.contracts.topics import STOCK_COMMANDS, TRANSFER_EVENTS

from ..api.plans import router as plans_router
from ..api.routes import router
from ..config import TransferSettings
from .consumers import consumer_specs
from .driver import deadline_driver


def create_app(settings: TransferSettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_transfer.entrypoints.app:create_app --factory`."""
    settings = settings or TransferSettings()
    definition = ServiceDefinition(
        name="transfer",
        migrations_package="jejaring_transfer.migrations",
        routers=[router, plans_router],
        consumers=consumer_specs(settings),
        topics=[TRANSFER_EVENTS, STOCK_COMMANDS],
        background=[deadline_driver(settings)],
        description="Restock requests, matching the best source, and the transfer saga.",
    )
    return create_service_app(definition, settings)
