from fastapi import FastAPI

from jejaring_shared.app import ServiceDefinition, create_service_app
from jejaring_shared.contracts.topics import TRANSFER_EVENTS

from ..api.routes import router
from ..config import TransferSettings


def create_app(settings: TransferSettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_transfer.entrypoints.app:create_app --factory`."""
    definition = ServiceDefinition(
        name="transfer",
        migrations_package="jejaring_transfer.migrations",
        routers=[router],
        topics=[TRANSFER_EVENTS],
    )
    return create_service_app(definition, settings or TransferSettings())
