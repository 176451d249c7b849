"""Field types shared by the services' request bodies."""

from __future__ import annotations

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
