from pydantic_settings import SettingsConfigDict

from jejaring_shared.settings import ServiceSettings


class SupplierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_SUPPLIER_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/supplier.db"
