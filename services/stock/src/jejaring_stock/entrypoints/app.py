from fastapi import FastAPI

from jejaring_shared.app import ConsumerSpec, ServiceDefinition, create_service_app
from jejaring_shared.contracts.topics import STOCK_EVENTS

from ..api.routes import policy_from, router
from ..config import StockSettings
from .background import background_jobs
from .commands import command_handlers


def create_app(settings: StockSettings | None = None) -> FastAPI:
    """ASGI factory: `uvicorn jejaring_stock.entrypoints.app:create_app --factory`."""
    settings = settings or StockSettings()
    policy = policy_from(settings)
    definition = ServiceDefinition(
        name="stock",
        migrations_package="jejaring_stock.migrations",
        routers=[router],
        topics=[STOCK_EVENTS],
        consumers=[
            ConsumerSpec(
                group_id=settings.commands_group,
                topics=[settings.commands_topic],
                handlers=command_handlers(policy),
            )
        ],
        background=background_jobs(
            policy,
            sweep_interval_s=settings.sweep_interval_s,
            velocity_interval_s=settings.velocity_interval_s,
        ),
    )
    return create_service_app(definition, settings)
