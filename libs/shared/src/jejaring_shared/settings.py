"""Settings shared by every service, read from the environment (pydantic-settings).

Each service subclasses ServiceSettings with its own env prefix (JEJARING_STOCK_ ...);
Kafka settings are common to all services (JEJARING_KAFKA_ ...). Nothing is read at import
time: call `Settings()` inside the app factory.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers")
    request_timeout_s: float = Field(default=10.0, gt=0, description="Bound on any Kafka call")
    # How long the broker holds a fetch that finds nothing new. It answers as soon as a
    # message arrives on a partition the fetch covers, so mostly this sets how often an
    # idle consumer asks: at 20 ms the idle stack (five processes, seven consumers) took
    # 40% of a core, at 200 ms 21%. The cost: aiokafka keeps one fetch in flight per
    # broker, and a partition whose records were still being handled when it left is
    # fetched again only when it returns, up to this long if the others stay quiet. Round
    # trips measured the same (20/200/500 ms on one partition, 20/100/200 ms on six), and
    # transfer's benchmark under load was 25-30% faster at 200 than at 20.
    fetch_max_wait_ms: int = Field(
        default=200, ge=0, description="Consumer long-poll wait (aiokafka defaults to 500 ms)"
    )
    partitions: int = Field(default=6, ge=1, description="Partitions for topics we create")


class ServiceSettings(BaseSettings):
    """Common settings; subclasses set env_prefix and defaults for their service."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="sqlite+aiosqlite:///.data/db/service.db",
        description="SQLAlchemy async URL (sqlite+aiosqlite or postgresql+asyncpg)",
    )
    relay_batch_size: int = Field(default=1000, ge=1, le=10_000)
    relay_idle_poll_s: float = Field(default=0.5, gt=0, description="Outbox poll when idle")
    relay_max_backoff_s: float = Field(default=5.0, gt=0)
    outbox_retention_hours: float = Field(
        default=72, gt=0, description="Published events are kept this long, then deleted"
    )
    inbox_retention_hours: float = Field(
        default=336, gt=0, description="Applied event ids are remembered this long (14 days)"
    )
    consumer_max_attempts: int = Field(default=5, ge=1, description="Tries before dead-letter")
    consumer_max_batch: int = Field(default=200, ge=1)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    internal_token: SecretStr | None = Field(
        default=None,
        validation_alias="JEJARING_INTERNAL_TOKEN",
        description=(
            "Shared credential of the gateway and the services (JEJARING_INTERNAL_TOKEN, no "
            "service prefix). When set, every route but health, readiness, metrics and the "
            "AsyncAPI document needs the header x-internal-token with this value."
        ),
    )
