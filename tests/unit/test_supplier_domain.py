"""Supplier rules without a database: signatures, backoff, assignment steps, reliability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jejaring_shared.errors import ApiError
from jejaring_supplier.domain.assignments import check_transition, reliability
from jejaring_supplier.domain.webhooks import backoff_s, sign, verify

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    import hashlib
    import hmac

    sig = sign("secret", "1700000000", b'{"a":1}')
    expected = hmac.new(b"secret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sig == "sha256=" + expected
    assert verify("secret", "1700000000", b'{"a":1}', sig)
    assert not verify("secret", "1700000001", b'{"a":1}', sig)
    assert not verify("other", "1700000000", b'{"a":1}', sig)
    assert not verify("secret", "1700000000", b'{"a":2}', sig)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 5, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def leg(status: str, **kw: Any) -> dict[str, Any]:
    return {
        "status": status,
        "quantity": 10,
        "shipped_quantity": None,
        "accept_by": NOW + timedelta(hours=1),
        "ship_by": NOW + timedelta(days=1),
        "accepted_at": None,
        "shipped_at": None,
        **kw,
    }


def test_repeating_a_step_is_a_no_op() -> None:
    assert check_transition("accept", leg("assigned"), NOW) is True
    assert check_transition("accept", leg("accepted"), NOW) is False
    assert check_transition("accept", leg("shipped"), NOW) is False
    assert check_transition("decline", leg("declined"), NOW) is False
    assert check_transition("ship", leg("shipped", shipped_quantity=4), NOW, quantity=4) is False


@pytest.mark.parametrize(
    ("action", "status", "args", "code"),
    [
        ("accept", "declined", {}, "assignment_declined"),
        ("decline", "accepted", {}, "assignment_accepted"),
        ("decline", "shipped", {}, "assignment_shipped"),
        ("ship", "assigned", {"quantity": 1}, "not_accepted"),
        ("ship", "declined", {"quantity": 1}, "assignment_declined"),
        ("ship", "accepted", {"quantity": 11}, "too_large"),
    ],
)
def test_steps_out_of_order_are_refused(
    action: Any, status: str, args: dict[str, Any], code: str
) -> None:
    with pytest.raises(ApiError) as caught:
        check_transition(action, leg(status), NOW, **args)
    assert caught.value.code == code


def test_accepting_after_the_deadline_is_refused() -> None:
    with pytest.raises(ApiError) as caught:
        check_transition("accept", leg("assigned"), NOW + timedelta(hours=2))
    assert (caught.value.status, caught.value.code) == (409, "deadline_passed")


def test_reliability_counts_on_time_over_decided() -> None:
    accepted = NOW - timedelta(minutes=30)
    rows = [
        leg("shipped", accepted_at=accepted, shipped_at=NOW),  # on time
        leg("shipped", accepted_at=accepted, shipped_at=NOW + timedelta(days=2)),  # late
        leg("declined"),
        leg("assigned"),  # still open: not counted
        leg("assigned", accept_by=NOW - timedelta(minutes=1)),  # let lapse: counted
    ]
    r = reliability(rows, NOW)
    assert (r.assigned, r.shipped, r.on_time, r.declined, r.open) == (5, 2, 1, 1, 1)
    assert r.score == 0.25
    assert reliability([leg("assigned")], NOW).score is None
