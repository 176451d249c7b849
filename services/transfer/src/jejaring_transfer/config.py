from pydantic_settings import SettingsConfigDict

from jejaring_shared.settings import ServiceSettings


class TransferSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_TRANSFER_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/transfer.db"
