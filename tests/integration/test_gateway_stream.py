"""The live event stream's limits, over a real HTTP server: streams per key, and a key
revoked while its stream is open (a busy one: events faster than the heartbeat)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx

from jejaring_shared.contracts import Envelope
from support.gateway import gateway_stack, serving
from support.kafka_io import send_raw
from support.wait import wait_until


async def test_a_keys_new_stream_replaces_its_oldest_and_a_revoked_key_loses_its_stream(
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

        async def read_to_end(resp: httpx.Response) -> str:
            return "".join([chunk async for chunk in resp.aiter_text()])

        # A third stream of the key takes the place of its oldest (which may be a link
        # gone half-open, never heard closing), which is told and ends.
        third = await streams.enter_async_context(client.stream("GET", url, headers=headers))
        assert third.status_code == 200
        assert "event: replaced" in await asyncio.wait_for(read_to_end(opened[0]), 10)
        [record] = [k for k in await gw.keys.list() if k.role == "ops"]
        assert len(hub.streams_of(record.key_id)) == 2

        # Revoked while streaming, busy or idle: the stream says so and ends (it ran on).
        assert await gw.keys.revoke(record.key_id)
        busy = asyncio.create_task(_keep_busy(bootstrap))
        try:
            text = await asyncio.wait_for(read_to_end(third), 10)
        finally:
            busy.cancel()
        assert "event: revoked" in text
        assert (await client.get(url, headers=headers)).status_code == 401


async def _keep_busy(bootstrap: str) -> None:
    """An event every 0.1 s (faster than the heartbeat) on a topic the gateway streams."""
    n = 0
    while True:
        envelope = Envelope(
            type="transfer.request_opened",
            source="transfer",
            key=f"rq-{n}",
            payload={"request_id": f"rq-{n}", "outlet_id": "o-1", "sku": "s", "quantity": 1},
        )
        await send_raw(bootstrap, "transfer.events", [(envelope.key.encode(), envelope.to_bytes())])
        n += 1
        await asyncio.sleep(0.1)
