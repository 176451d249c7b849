"""Events of the catalog service."""

from pydantic import Field

from .registry import REGISTRY, Payload
from .topics import CATALOG_EVENTS


@REGISTRY.register("catalog.product_created", topic=CATALOG_EVENTS)
class ProductCreated(Payload):
    """A product was added to the catalog."""

    sku: str = Field(max_length=64)
    name: str = Field(max_length=200)
    unit: str = Field(max_length=20)
    case_pack: int = Field(ge=1)
    min_transfer_qty: int = Field(ge=1)
    cluster: str | None = Field(default=None, max_length=40)
    category: str | None = Field(default=None, max_length=40)
    barcode: str | None = Field(default=None, max_length=14)
    perishable: bool = False
    shelf_life_days: int | None = Field(default=None, ge=1)
    member_made: bool = False
    pareto_class: str = Field(default="C", pattern="^[ABC]$")


@REGISTRY.register("catalog.product_updated", topic=CATALOG_EVENTS)
class ProductUpdated(ProductCreated):
    """A product's attributes changed (the full new state)."""


@REGISTRY.register("catalog.product_retired", topic=CATALOG_EVENTS)
class ProductRetired(Payload):
    """A product is no longer sold; offers and requests for it are refused."""

    sku: str = Field(max_length=64)
