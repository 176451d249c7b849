"""Free text with a lone surrogate (JSON "\\ud800") is bad input in every service: a 422
with the field, not a failure at the database."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from jejaring_catalog.domain.products import ProductFields
from jejaring_shared.fields import unicode_text
from jejaring_stock.api.models import ReceiptIn
from jejaring_supplier.api.models import DeclineIn, ShipIn
from jejaring_transfer.api.routes import ReceiveIn

BAD = "gula\ud800"


def test_text_passes_real_unicode_and_refuses_a_lone_surrogate() -> None:
    assert unicode_text("Kopi Depok ☕ — é") == "Kopi Depok ☕ — é"
    with pytest.raises(ValueError, match="lone surrogate"):
        unicode_text(BAD)


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
    model: type[BaseModel], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    errors = caught.value.errors()
    assert [e["loc"][0] for e in errors] == [field]
    # pydantic itself refuses it where it transforms or measures the text (string_unicode);
    # `Text` refuses it everywhere else (value_error). Both answer 422 on the field.
    assert errors[0]["type"] in ("string_unicode", "value_error")
