from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_GATEWAY_", extra="ignore")

    catalog_url: str = "http://127.0.0.1:8101"
    stock_url: str = "http://127.0.0.1:8102"
    transfer_url: str = "http://127.0.0.1:8103"
    supplier_url: str = "http://127.0.0.1:8104"
    upstream_timeout_s: float = Field(default=10.0, gt=0)

    def services(self) -> dict[str, str]:
        return {
            "catalog": self.catalog_url,
            "stock": self.stock_url,
            "transfer": self.transfer_url,
            "supplier": self.supplier_url,
        }
