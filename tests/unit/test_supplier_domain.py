"""Supplier rules without a database: signatures, backoff, assignment steps, reliability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jejaring_shared.errors import ApiError
from jejaring_supplier.domain.assignments import check_transition, reliability
from jejaring_supplier.domain.webhooks import (
    address_refusal,
    backoff_s,
    host_refusal,
    sign,
    verify,
)

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
        ("accept", "cancelled", {}, "assignment_cancelled"),
        ("decline", "cancelled", {}, "assignment_cancelled"),
        ("ship", "cancelled", {"quantity": 1}, "assignment_cancelled"),
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


def test_a_leg_called_off_counts_against_a_supplier_only_past_a_deadline() -> None:
    """Called off while the supplier was within its deadlines (its request cancelled, or
    timed out by transfer just after an accept made in time): not counted. Called off
    after accept_by without an accept, or after ship_by without shipping: counted, not
    on time, as it would have been had it not been called off."""
    accepted = NOW - timedelta(minutes=30)
    shipped = leg("shipped", accepted_at=accepted, shipped_at=NOW)
    in_time = [
        leg("cancelled", cancelled_at=NOW),  # request cancelled while it waited
        leg("cancelled", accepted_at=accepted, cancelled_at=NOW + timedelta(hours=2)),
    ]
    late = [
        leg("cancelled", cancelled_at=NOW + timedelta(hours=2)),  # never accepted
        leg("cancelled", accepted_at=accepted, cancelled_at=NOW + timedelta(days=2)),
    ]
    assert reliability([shipped, *in_time], NOW).score == 1.0
    r = reliability([shipped, *in_time, *late], NOW + timedelta(days=3))
    assert (r.assigned, r.shipped, r.score) == (3, 1, round(1 / 3, 4))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "hooks.localhost",
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.9",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "[::1]",
        "::ffff:127.0.0.1",
        "fd00::1",
        "224.0.0.1",
    ],
)
def test_webhooks_into_our_own_network_are_refused(host: str) -> None:
    assert host_refusal(host) is not None


@pytest.mark.parametrize("host", ["8.8.8.8", "hooks.example.com", "[2001:4860:4860::8888]"])
def test_public_webhook_hosts_pass(host: str) -> None:
    assert host_refusal(host) is None


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    assert address_refusal(["8.8.8.8", "2001:4860:4860::8888"]) is None
    assert address_refusal(["8.8.8.8", "10.0.0.7"]) == "resolves to 10.0.0.7, not a public address"
    assert address_refusal(["fe80::1%eth0"]) is not None


async def test_a_delivery_to_a_name_that_resolves_inward_is_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import socket

    import httpx

    from jejaring_supplier.adapters.webhook_sender import post

    async def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if ".." in host:
            raise UnicodeError("label empty or too long")  # what the real lookup raises
        address = {"inward.example": "10.0.0.5"}.get(host, "8.8.8.8")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200)

    delivery = {"id": "d1", "event": "e", "body": "{}", "secret": "s" * 16}
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        for url in ("http://inward.example/hook", "http://127.0.0.1:9/hook"):
            out = await post(client, {**delivery, "url": url})
            assert not out.ok and (out.error or "").startswith("refused: ")
        assert sent == []
        out = await post(client, {**delivery, "url": "https://hooks.example.com/hook"})
        assert out.ok and sent == ["https://hooks.example.com/hook"]
        # A host that cannot even be looked up is a failed attempt, not an error that
        # would keep the rest of the batch from being recorded.
        out = await post(client, {**delivery, "url": "http://example..com/hook"})
        assert not out.ok and (out.error or "").startswith("refused: ")
        # Local runs and tests opt in.
        out = await post(client, {**delivery, "url": "http://127.0.0.1:9/h"}, allow_private=True)
        assert out.ok


async def test_a_receiver_that_dribbles_its_answer_is_cut_off_as_a_whole() -> None:
    """httpx's timeout bounds each read, not the request: a receiver sending its answer a
    byte at a time held the batch (and every other supplier's delivery) for ever."""
    import asyncio
    import time

    import httpx

    from jejaring_supplier.adapters.webhook_sender import post

    class Dribble(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for _ in range(100):
                await asyncio.sleep(0.05)
                yield b"x"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Dribble())

    delivery = {"id": "d1", "event": "e", "body": "{}", "secret": "s" * 16}
    started = time.monotonic()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        out = await post(
            client, {**delivery, "url": "http://127.0.0.1:9/h"}, allow_private=True, timeout_s=0.3
        )
    # The status came at once and the body is never read: delivered, without waiting.
    assert out.ok and time.monotonic() - started < 1.0

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    started = time.monotonic()
    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        out = await post(
            client, {**delivery, "url": "http://127.0.0.1:9/h"}, allow_private=True, timeout_s=0.3
        )
    assert not out.ok and out.error == "no answer within 0.3 s"
    assert time.monotonic() - started < 1.0
