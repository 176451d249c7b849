from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jejaring_shared.settings import ServiceSettings


class TransferSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="JEJARING_TRANSFER_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/db/transfer.db"
    group_prefix: str = Field(
        default="transfer", description="Prefix of the consumer groups (<prefix>-stock, ...)"
    )
    request_ttl_s: float = Field(
        default=72 * 3600, gt=0, description="A request without needed-by expires after this"
    )
    expiry_grace_s: float = Field(
        default=24 * 3600, ge=0, description="A request with needed-by expires this long after it"
    )
    needed_by_horizon_s: float = Field(
        default=90 * 24 * 3600,
        gt=0,
        description="How far ahead needed-by may be (its reservations are held until then)",
    )
    accept_timeout_s: float = Field(
        default=3600, gt=0, description="A supplier must accept a leg within this"
    )
    reservation_margin_s: float = Field(
        default=600, ge=0, description="Reservations outlive the request's expiry by this"
    )
    deadline_poll_s: float = Field(
        default=0.5, gt=0, description="How often deadlines (accept_by, expiry) are checked"
    )
    rematch_interval_s: float = Field(
        default=5.0, gt=0, description="How often requests waiting for a source are re-matched"
    )
    auto_restock: bool = Field(
        default=True, description="Open a request on stock.low (unless the event says not to)"
    )
    plan_stale_after_s: float = Field(
        default=24 * 3600, gt=0, description="A rebalancing plan older than this is not approved"
    )
    plan_search_effort: int = Field(
        default=250_000,
        ge=0,
        description="Local search per sku when proposing a plan, in flow arcs solved "
        "(rebalancing.plan_sku's effort; 0 = none): more finds cheaper plans, slower",
    )
    plan_lns_rounds: int = Field(
        default=5,
        ge=0,
        description="Neighbourhood solves per sku when proposing a plan, after the local "
        "search (rebalancing.plan_sku's lns_rounds, each a small CP-SAT model; 0 = none)",
    )
