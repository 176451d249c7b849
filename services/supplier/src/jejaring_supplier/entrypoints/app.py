from fastapi import FastAPI

from jejaring_shared.app import ServiceDefinition, create_service_app
from jejaring_shared.contracts.topics import SUPPLIER_EVENTS

from ..api.routes import router
from ..config import SupplierSettings


def create_app(settings: SupplierSettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_supplier.entrypoints.app:create_app --factory`."""
    definition = ServiceDefinition(
        name="supplier",
        migrations_package="jejaring_supplier.migrations",
        routers=[router],
        topics=[SUPPLIER_EVENTS],
    )
    return create_service_app(definition, settings or SupplierSettings())
