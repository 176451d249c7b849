from fastapi import FastAPI

from jejaring_shared.app import ServiceDefinition, create_service_app
from jejaring_shared.contracts.topics import SUPPLIER_EVENTS

from ..adapters.consumers import consumer_specs
from ..adapters.webhook_sender import run_webhook_sender
from ..api.routes import router
from ..config import SupplierSettings


def create_app(settings: SupplierSettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_supplier.entrypoints.app:create_app --factory`."""
    settings = settings or SupplierSettings()
    definition = ServiceDefinition(
        name="supplier",
        migrations_package="jejaring_supplier.migrations",
        routers=[router],
        consumers=consumer_specs(settings),
        topics=[SUPPLIER_EVENTS],
        background=[run_webhook_sender],
        description="Community suppliers, offers, the assignment inbox and settlements.",
    )
    return create_service_app(definition, settings)
