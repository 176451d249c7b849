from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jejaring_shared.settings import ServiceSettings


class SupplierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_SUPPLIER_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/supplier.db"
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="Bound on one delivery")
    webhook_max_attempts: int = Field(
        default=100,
        ge=1,
        description="Tries before giving up: with the default backoff about a day (8 in the "
        "first 21 minutes, then one every 15), so a receiver down for hours still hears",
    )
    webhook_backoff_base_s: float = Field(default=5.0, gt=0, description="Wait after 1st failure")
    webhook_backoff_max_s: float = Field(default=900.0, gt=0, description="Longest wait")
    webhook_poll_s: float = Field(default=0.5, gt=0, description="Sender poll when idle")
    webhook_batch: int = Field(default=20, ge=1, description="Deliveries sent at once")
    webhook_allow_private: bool = Field(
        default=False,
        description=(
            "Allow webhook URLs on loopback and private networks (local runs and tests); "
            "off in production, so a supplier's URL cannot reach into the cooperative's "
            "own network"
        ),
    )
    catalog_group: str = Field(
        default="supplier-catalog", description="Consumer group of catalog.events"
    )
    transfer_group: str = Field(
        default="supplier-transfer", description="Consumer group of transfer.events"
    )
