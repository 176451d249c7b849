"""The live event stream's limits, over a real HTTP server: streams per key, and a key
revoked while its stream is open."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx

from support.gateway import gateway_stack, serving
from support.wait import wait_until


async def test_a_key_holds_a_few_streams_and_a_revoked_key_loses_its_stream(
    tmp_path: Path, kafka_broker: Any
) -> None:
    bootstrap = str(kafka_broker.bootstrap_servers)
    async with (
        gateway_stack(
            tmp_path,
            bootstrap,
            ("catalog",),
            events=True,
            events_streams_per_key=2,
            events_heartbeat_s=0.3,
            key_cache_s=0.0,
        ) as gw,
        serving(gw.app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        contextlib.AsyncExitStack() as streams,
    ):
        hub = gw.app.state.hub
        await wait_until(lambda: asyncio.sleep(0, hub.ready), 60, "the gateway's event consumer")
        headers = await gw.headers("ops")
        # Who a key is, from the gateway alone (transfer, stock, supplier are not running).
        me = await client.get("/api/v1/me", headers=await gw.headers("outlet:o-7"))
        assert me.status_code == 200
        assert {k: me.json()[k] for k in ("role", "subject")} == {
            "role": "outlet",
            "subject": "o-7",
        }
        assert (await client.get("/api/v1/me")).status_code == 401
        url = "/api/v1/events/stream"
        opened = [
            await streams.enter_async_context(client.stream("GET", url, headers=headers))
            for _ in range(2)
        ]
        assert [r.status_code for r in opened] == [200, 200]
        # A third stream of the same key is refused; another key still gets one.
        third = await client.get(url, headers=headers)
        assert (third.status_code, third.json()["error"]["code"]) == (429, "too_many_streams")
        other = await streams.enter_async_context(
            client.stream("GET", url, headers=await gw.headers("admin"))
        )
        assert other.status_code == 200

        # Revoked while streaming: the stream says so and ends (it ran on for good).
        [record] = [k for k in await gw.keys.list() if k.role == "ops"]
        assert await gw.keys.revoke(record.key_id)

        async def read_to_end(resp: httpx.Response) -> str:
            return "".join([chunk async for chunk in resp.aiter_text()])

        text = await asyncio.wait_for(read_to_end(opened[0]), 10)
        assert "event: revoked" in text
        assert (await client.get(url, headers=headers)).status_code == 401
