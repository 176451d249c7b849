from pydantic_settings import SettingsConfigDict

from jejaring_shared.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_CATALOG_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/catalog.db"
