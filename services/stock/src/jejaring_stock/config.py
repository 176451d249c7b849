from pydantic_settings import SettingsConfigDict

from jejaring_shared.settings import ServiceSettings


class StockSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_STOCK_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/stock.db"
