"""The gateway's upstream sender: what it retries and what it never does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from jejaring_gateway.adapters import upstream


def flaky(failures: list[Exception]) -> tuple[httpx.AsyncClient, list[str]]:
    """A client whose first sends fail with `failures`, in order, then answer 200."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json={"ok": True})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        # A pooled connection the service closed just as the request went out.
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset by peer"),
    ],
)
async def test_a_get_is_retried_when_no_answer_came(failure: Exception) -> None:
    client, seen = flaky([failure])
    async with client:
        resp = await upstream.send(client, client.build_request("GET", "http://s/x"), retries=2)
    assert resp.status_code == 200 and seen == ["GET", "GET"]


async def test_a_post_is_never_retried() -> None:
    client, seen = flaky([httpx.RemoteProtocolError("Server disconnected")])
    async with client:
        with pytest.raises(httpx.RemoteProtocolError):
            await upstream.send(client, client.build_request("POST", "http://s/x"), retries=2)
    assert seen == ["POST"]


async def test_retries_stop_at_the_limit() -> None:
    client, seen = flaky([httpx.ConnectError("refused")] * 3)
    async with client:
        with pytest.raises(httpx.ConnectError):
            await upstream.send(client, client.build_request("GET", "http://s/x"), retries=2)
    assert seen == ["GET"] * 3


async def test_a_streamed_body_is_not_sent_twice() -> None:
    """A GET with a streamed body (an upload path) may have sent part of it already."""

    async def body() -> AsyncIterator[bytes]:
        yield b"sku,name\n"

    client, seen = flaky([httpx.RemoteProtocolError("Server disconnected")])
    async with client:
        request = client.build_request("GET", "http://s/x", content=body())
        with pytest.raises(httpx.RemoteProtocolError):
            await upstream.send(client, request, retries=2)
    assert seen == ["GET"]
