from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jejaring_shared.contracts.topics import STOCK_COMMANDS
from jejaring_shared.settings import ServiceSettings


class StockSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_STOCK_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/stock.db"
    commands_topic: str = Field(
        default=STOCK_COMMANDS, description="Topic of the commands from transfer"
    )
    commands_group: str = Field(default="stock", description="Consumer group of the commands")
    sweep_interval_s: float = Field(
        default=1.0, gt=0, description="How often expired reservations are released"
    )
    velocity_interval_s: float = Field(
        default=300.0, gt=0, description="How often sales rates and derived levels are refreshed"
    )
    velocity_window_days: int = Field(default=28, ge=1, le=365)
    velocity_alpha: float = Field(
        default=0.3, gt=0, le=1, description="Smoothing of the daily sales rate (EWMA weight)"
    )
    default_lead_time_days: float = Field(default=2.0, ge=0)
    review_days: float = Field(
        default=7.0, ge=0, description="maximum = reorder point + rate x review days"
    )
    cover_limit_days: float = Field(
        default=60.0, gt=0, description="Days of cover above which stock counts as surplus"
    )
