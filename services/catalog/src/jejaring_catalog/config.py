from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jejaring_shared.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_CATALOG_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/catalog.db"
    import_max_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest CSV import accepted"
    )
    import_max_rows: int = Field(default=100_000, ge=1, description="Most rows in one import")
