"""Field types shared by the services' request bodies."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AfterValidator


def unicode_text(value: str) -> str:
    """JSON may carry a lone surrogate ("\\ud800") or a NUL ("\\u0000"): not text every
    database can store (PostgreSQL refuses NUL in text), so either is refused as bad input
    (422 with the field) instead of failing at the database as an outage."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    if "\x00" in value:
        raise ValueError("text may not contain a NUL character")
    return value


Text = AfterValidator(unicode_text)
"""Put in `Annotated[str, ..., Text]` for every free-text field of a request body."""


def in_utc(value: datetime) -> datetime:
    """An aware time as UTC. SQLite keeps a time's wall clock and drops its offset, so
    `03:00+07:00` stored as given reads back as 03:00 UTC, seven hours late (and on
    another day for daily sales rates)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is before year 1 in UTC: bad input, not a 500.
        raise ValueError("the time is out of range once in UTC") from None


Utc = AfterValidator(in_utc)
"""Put in `Annotated[AwareDatetime, Utc]` for every time a request body carries."""
