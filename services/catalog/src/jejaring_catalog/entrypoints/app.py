from fastapi import FastAPI

from jejaring_shared.app import ServiceDefinition, create_service_app
from jejaring_shared.contracts.topics import CATALOG_EVENTS

from ..api.routes import router
from ..config import CatalogSettings


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_catalog.entrypoints.app:create_app --factory`."""
    definition = ServiceDefinition(
        name="catalog",
        migrations_package="jejaring_catalog.migrations",
        routers=[router],
        topics=[CATALOG_EVENTS],
        description="Products, categories and business clusters: the master list.",
    )
    return create_service_app(definition, settings or CatalogSettings())
