"""Field types shared by the services' request bodies."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AfterValidator


def unicode_text(value: str) -> str:
    """JSON may carry a lone surrogate ("\\ud800"): not text any database can store, so it
    is refused as bad input (422 with the field) instead of failing at the database."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return value


Text = AfterValidator(unicode_text)
"""Put in `Annotated[str, ..., Text]` for every free-text field of a request body."""


def in_utc(value: datetime) -> datetime:
    """An aware time as UTC. SQLite keeps a time's wall clock and drops its offset, so
    `03:00+07:00` stored as given reads back as 03:00 UTC, seven hours late (and on
    another day for daily sales rates)."""
    return value.astimezone(UTC)


Utc = AfterValidator(in_utc)
"""Put in `Annotated[AwareDatetime, Utc]` for every time a request body carries."""
