"""Transfer's KPIs from request rows (the route reads them; `kpis_of` computes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jejaring_transfer.api.routes import kpis_of

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def _row(status: str, quantity: int, received: int, minutes: float = 30) -> dict[str, Any]:
    created = NOW - timedelta(minutes=minutes)
    closed = None if status in ("open", "matching") else NOW
    return {
        "status": status,
        "quantity": quantity,
        "received": received,
        "created_at": created,
        "closed_at": closed,
    }


def test_an_over_filled_request_does_not_hide_one_left_empty() -> None:
    """A supplier shipping after its timed-out leg was re-matched brings 20 to a request of
    10; with another request of 10 that got nothing, half the need was met, not all."""
    out = kpis_of(
        [_row("fulfilled", 10, 20), _row("expired", 10, 0)], {"supplier": 10, "outlet": 10}, NOW
    )
    assert out["fill_rate"] == 0.5
    assert (out["requested_units"], out["received_units"]) == (20, 10)
    assert out["filled_units"] == {"peers": 10, "suppliers": 10}  # units moved, as moved


def test_open_requests_are_counted_by_age_not_in_the_fill_rate() -> None:
    out = kpis_of(
        [_row("open", 10, 0, 5), _row("matching", 5, 0, 7 * 60), _row("cancelled", 4, 1)],
        {},
        NOW,
    )
    assert out["fill_rate"] == 0.25  # the cancelled request counts: it was not served
    assert out["open_by_age"] == {"lt_1h": 1, "1h_6h": 0, "6h_24h": 1, "gt_24h": 0}
    assert out["share"] == {"peers": None, "suppliers": None}
    assert out["time_to_fill_s"] == {"p50": None, "p90": None, "n": 0}
