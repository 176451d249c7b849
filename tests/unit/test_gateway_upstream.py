"""The gateway's upstream sender: what it retries and what it never does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from jejaring_gateway.adapters import upstream
from jejaring_gateway.config import GatewaySettings


def flaky(failures: list[Exception]) -> tuple[upstream.UpstreamClient, list[str]]:
    """A client whose first sends fail with `failures`, in order, then answer 200."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json={"ok": True})

    return upstream.UpstreamClient(transport=httpx.MockTransport(handler)), seen


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


async def test_a_cookie_a_service_sets_is_never_sent_on_later_requests() -> None:
    """The gateway's one client serves every key: what one answer set must not reach the
    service again on another caller's request."""
    cookies: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cookies.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=alice; Path=/"})

    client = upstream.make_client(GatewaySettings(), transport=httpx.MockTransport(handler))
    async with client:
        # The proxy's sends (straight to the transport) and the client's own calls (the
        # merged OpenAPI, the ops pages), which do go through its cookie jar.
        for _ in range(2):
            await upstream.send(client, client.build_request("GET", "http://s/x"), retries=0)
            await client.get("http://s/openapi.json")
    assert cookies == [None, None, None, None]
    assert not client.cookies


# -- the pool's network backend (adapters/netbackend.py), over real sockets ----------------


class _Server:
    """A local HTTP/1.1 server: answers each request with its own counter, and closes the
    connection after `close_after` requests (as uvicorn does after its keep-alive)."""

    def __init__(
        self, close_after: int = 1_000, delay_s: float = 0.0, parting: bytes = b""
    ) -> None:
        self.close_after = close_after
        self.delay_s = delay_s
        self.parting = parting
        """Sent unasked before closing (as a server's 408 on an idle connection)."""
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for n in range(self.close_after):
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    pass
                if not line:
                    return
                await asyncio.sleep(self.delay_s)
                body = f"{self.connections}.{n}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
            writer.write(self.parting)
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _client(**timeouts: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4, keepalive_expiry=5)
    return httpx.AsyncClient(
        transport=upstream.pooled_transport(limits), timeout=httpx.Timeout(5, **timeouts)
    )


async def test_the_pool_runs_on_asyncio_streams_and_keeps_connections_alive() -> None:
    from jejaring_gateway.adapters.netbackend import AsyncioBackend

    transport = upstream.pooled_transport(httpx.Limits())
    assert isinstance(transport._pool._network_backend, AsyncioBackend)  # an httpx upgrade
    server = _Server()
    async with server as url, _client() as client:
        bodies = [(await client.get(f"{url}/x")).text for _ in range(3)]
    assert bodies == ["1.0", "1.1", "1.2"] and server.connections == 1


async def test_a_connection_the_service_closed_is_not_reused() -> None:
    server = _Server(close_after=1)
    async with server as url, _client() as client:
        first = (await client.get(f"{url}/x")).text
        await asyncio.sleep(0.1)  # the service has closed it by now
        second = (await client.get(f"{url}/x")).text
    assert (first, second) == ("1.0", "2.0")


async def test_what_a_service_sent_unasked_is_never_the_next_answer() -> None:
    stale = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 5\r\n\r\nstale"
    server = _Server(close_after=1, parting=stale)
    async with server as url, _client() as client:
        first = await client.get(f"{url}/x")
        await asyncio.sleep(0.1)
        second = await client.get(f"{url}/x")
    assert (first.text, second.status_code, second.text) == ("1.0", 200, "2.0")


async def test_errors_are_httpx_errors() -> None:
    async with _Server() as url:
        dead = url
    async with _client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{dead}/x")
    async with _Server(delay_s=1.0) as url, _client(read=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{url}/x")
