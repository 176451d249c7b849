from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from jejaring_shared.settings import KafkaSettings


class GatewaySettings(BaseSettings):
    """Every setting is an environment variable with the JEJARING_GATEWAY_ prefix, except
    the internal credential (JEJARING_INTERNAL_TOKEN, shared with the services) and Kafka's
    (JEJARING_KAFKA_...)."""

    model_config = SettingsConfigDict(
        env_prefix="JEJARING_GATEWAY_", extra="ignore", populate_by_name=True
    )

    catalog_url: str = "http://127.0.0.1:8101"
    stock_url: str = "http://127.0.0.1:8102"
    transfer_url: str = "http://127.0.0.1:8103"
    supplier_url: str = "http://127.0.0.1:8104"
    upstream_timeout_s: float = Field(default=10.0, gt=0)
    upstream_connect_timeout_s: float = Field(default=2.0, gt=0)
    slow_timeout_s: float = Field(
        default=180.0, gt=0, description="Upstream timeout of CSV imports and plan proposals"
    )
    upstream_max_connections: int = Field(default=200, ge=1)
    upstream_max_keepalive: int = Field(
        default=16,
        ge=1,
        description="Idle upstream connections kept open; httpcore scans every pooled "
        "connection on each request, so a burst's surplus is closed rather than kept",
    )
    get_retries: int = Field(
        default=2, ge=0, le=5, description="GET/HEAD retries when no answer came"
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///.data/db/gateway.db",
        description="API keys (hashed): sqlite+aiosqlite or postgresql+asyncpg",
    )
    internal_token: SecretStr | None = Field(
        default=None,
        validation_alias="JEJARING_INTERNAL_TOKEN",
        description="Sent to the services as x-internal-token",
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="JSON bodies")
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="CSV imports (streamed through)"
    )
    max_page_size: int = Field(
        default=200, ge=1, description="`limit` query values above it are capped"
    )
    rate_per_s: float = Field(default=50.0, gt=0, description="Sustained requests/s per key")
    rate_burst: int = Field(default=100, ge=1, description="Requests a key may burst")
    failed_key_rate_per_s: float = Field(
        default=2.0,
        gt=0,
        description="Sustained unknown or revoked keys/s per client address (each costs a "
        "key-store read); past it, 429 until the address slows down",
    )
    failed_key_burst: int = Field(
        default=20, ge=1, description="Unknown or revoked keys a client address may burst"
    )
    key_cache_s: float = Field(
        default=5.0, ge=0, description="How long a looked-up key is trusted (revocation delay)"
    )
    events_enabled: bool = Field(default=True, description="Run the live event consumer")
    events_client_queue: int = Field(default=1000, ge=1, description="Events buffered per client")
    events_replay: int = Field(default=200, ge=0, description="Recent events kept for new clients")
    events_heartbeat_s: float = Field(default=15.0, gt=0)
    events_streams_per_key: int = Field(
        default=5, ge=1, description="Live streams one key may hold open at once"
    )
    events_max_streams: int = Field(
        default=500, ge=1, description="Live streams the gateway process holds open at once"
    )
    openapi_ttl_s: float = Field(default=60.0, gt=0, description="Merged OpenAPI cache")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    def services(self) -> dict[str, str]:
        return {
            "catalog": self.catalog_url,
            "stock": self.stock_url,
            "transfer": self.transfer_url,
            "supplier": self.supplier_url,
        }
