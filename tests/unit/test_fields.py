"""Free text with a lone surrogate (JSON "\\ud800") or a NUL (PostgreSQL stores no NUL in
text) is bad input in every service: a 422 with the field, not a failure at the database.
So is a time that is out of range once in UTC, and a NUL in a URL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from jejaring_catalog.domain.products import ProductFields
from jejaring_shared.fields import in_utc, unicode_text
from jejaring_stock.api.models import ReceiptIn
from jejaring_supplier.api.models import DeclineIn, ShipIn
from jejaring_transfer.api.routes import ReceiveIn

BAD = "gula\ud800"
NUL = "gula\x00pasir"


def test_text_passes_real_unicode_and_refuses_a_lone_surrogate_or_a_nul() -> None:
    assert unicode_text("Kopi Depok ☕ — é") == "Kopi Depok ☕ — é"
    with pytest.raises(ValueError, match="lone surrogate"):
        unicode_text(BAD)
    with pytest.raises(ValueError, match="NUL"):
        unicode_text(NUL)


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_out_of_range_in_utc_is_a_422_on_its_field(at: str) -> None:
    from datetime import UTC, datetime

    assert in_utc(datetime.fromisoformat("2026-01-01T07:00:00+07:00")) == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    with pytest.raises(ValidationError) as caught:
        ReceiptIn.model_validate(
            {
                "idempotency_key": "k",
                "sku": "s",
                "quantity": 1,
                "source": "supplier",
                "received_at": at,
            }
        )
    assert [e["loc"][0] for e in caught.value.errors()] == ["received_at"]


@pytest.mark.parametrize("bad", [BAD, NUL])
@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (ProductFields, {"name": BAD, "unit": "kg"}, "name"),
        (
            ReceiptIn,
            {"idempotency_key": BAD, "sku": "s", "quantity": 1, "source": "supplier"},
            "idempotency_key",
        ),
        (DeclineIn, {"reason": BAD}, "reason"),
        (ShipIn, {"quantity": 1, "note": BAD}, "note"),
        (ReceiveIn, {"quantity": 1, "reason": BAD}, "reason"),
    ],
)
def test_each_service_refuses_it_on_the_field(
    model: type[BaseModel], body: dict[str, Any], field: str, bad: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate({k: bad if v == BAD else v for k, v in body.items()})
    errors = caught.value.errors()
    assert [e["loc"][0] for e in errors] == [field]
    # pydantic itself refuses it where it transforms or measures the text (string_unicode);
    # `Text` refuses it everywhere else (value_error). Both answer 422 on the field.
    assert errors[0]["type"] in ("string_unicode", "value_error")
