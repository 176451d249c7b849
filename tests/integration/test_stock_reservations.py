"""Reservations driven over the API and by transfer's commands on a real Kafka broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

from jejaring_shared.contracts import Envelope, Payload
from jejaring_shared.contracts.registry import REGISTRY
from jejaring_shared.contracts.stock import DispatchStock, ReceiveStock, ReserveStock
from jejaring_shared.contracts.topics import STOCK_EVENTS
from jejaring_stock.config import StockSettings
from support.kafka_io import read_all, send_raw
from support.stock import level, make_outlet, outbox_events, receive, running_stock, stock_settings
from support.wait import wait_until


def settings_for(db_url: str, bootstrap: str, **extra: Any) -> StockSettings:
    tag = uuid.uuid4().hex[:10]
    return stock_settings(
        db_url,
        bootstrap,
        commands_topic=f"stock.commands.t{tag}",
        commands_group=f"stock-t{tag}",
        **extra,
    )


def command(payload: Payload) -> tuple[bytes, bytes | None]:
    et = REGISTRY.for_model(type(payload))
    key = f"{payload.outlet_id}:{payload.sku}"  # type: ignore[attr-defined]
    env = Envelope(
        type=et.name, source="transfer", key=key, payload=payload.model_dump(mode="json")
    )
    return key.encode(), env.to_bytes()


async def consumer_ready(app: FastAPI) -> None:
    runner = app.state.runtime.consumers[0]

    async def assigned() -> bool:
        return bool(runner.assigned)

    await wait_until(assigned, timeout=90, what="stock consumer assigned")


async def test_200_concurrent_reservations_against_50_on_postgresql(
    pg_database_url: str, kafka_broker: Any
) -> None:
    settings = settings_for(pg_database_url, kafka_broker.bootstrap_servers)
    async with running_stock(settings) as (app, client):
        outlet = await make_outlet(client)
        await receive(client, outlet, "beras", 50)
        await consumer_ready(app)
        engine = app.state.runtime.engine
        lowest: list[int] = []
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                async with engine.connect() as conn:
                    lowest.append(
                        int(
                            await conn.scalar(
                                sa.text(
                                    "SELECT on_hand - reserved FROM stock_levels "
                                    "WHERE outlet_id = :o AND sku = 'beras'"
                                ),
                                {"o": outlet},
                            )
                        )
                    )
                await asyncio.sleep(0.005)

        async def over_api(i: int) -> int:
            resp = await client.post(
                f"/api/v1/outlets/{outlet}/reservations",
                json={"leg_id": f"api-{outlet}-{i}", "sku": "beras", "quantity": 1},
            )
            assert resp.status_code in (201, 409), resp.text
            if resp.status_code == 409:
                assert resp.json()["error"]["code"] == "insufficient_stock"
            return resp.status_code

        commands = [
            command(
                ReserveStock(outlet_id=outlet, sku="beras", leg_id=f"cmd-{outlet}-{i}", quantity=1)
            )
            for i in range(100)
        ]
        watcher = asyncio.create_task(watch())
        codes, _ = await asyncio.gather(
            asyncio.gather(*(over_api(i) for i in range(100))),
            send_raw(kafka_broker.bootstrap_servers, settings.commands_topic, commands),
        )

        async def answers() -> list[tuple[str, dict[str, Any]]]:
            events = await outbox_events(app, key_prefix=f"{outlet}:")
            got = [
                (t, p)
                for t, p in events
                if t in ("stock.reserved", "stock.reservation_rejected")
                and p["leg_id"].startswith("cmd-")
            ]
            return got if len(got) >= 100 else []

        answered = await wait_until(answers, timeout=120, what="100 command answers")
        stop.set()
        await watcher
        api_ok = codes.count(201)
        cmd_ok = sum(1 for t, _ in answered if t == "stock.reserved")
        rejected = [p for t, p in answered if t == "stock.reservation_rejected"]
        assert api_ok + cmd_ok == 50, (api_ok, cmd_ok)
        assert len(answered) == 100
        assert {p["reason"] for p in rejected} <= {"insufficient_stock"}
        lv = await level(client, outlet, "beras")
        assert (lv["on_hand"], lv["reserved"], lv["available"]) == (50, 50, 0)
        assert min(lowest) >= 0
        reservations = (await client.get(f"/api/v1/outlets/{outlet}/reservations")).json()
        assert len(reservations["reservations"]) == 50


async def test_reservation_with_2s_expiry_never_dispatched_is_released(
    db_url: str, kafka_broker: Any
) -> None:
    settings = settings_for(db_url, kafka_broker.bootstrap_servers, sweep_interval_s=0.2)
    async with running_stock(settings) as (app, client):
        outlet = await make_outlet(client)
        await receive(client, outlet, "gula", 10)
        await send_raw(
            kafka_broker.bootstrap_servers,
            settings.commands_topic,
            [
                command(
                    ReserveStock(
                        outlet_id=outlet,
                        sku="gula",
                        leg_id=f"x-{outlet}",
                        quantity=4,
                        expires_in_s=2,
                    )
                )
            ],
        )

        async def reserved() -> bool:
            return bool((await level(client, outlet, "gula"))["reserved"] == 4)

        await wait_until(reserved, timeout=90, what="the reservation")

        async def released() -> list[dict[str, Any]]:
            return [
                p
                for t, p in await outbox_events(app, key_prefix=outlet)
                if t == "stock.reservation_released"
            ]

        got = await wait_until(released, timeout=10, what="stock.reservation_released")
        assert got[0]["reason"] == "expired" and got[0]["quantity"] == 4
        lv = await level(client, outlet, "gula")
        assert (lv["reserved"], lv["available"]) == (0, 10)
        async with app.state.runtime.engine.connect() as conn:
            stored = await conn.scalar(
                sa.text("SELECT reserved FROM stock_levels WHERE outlet_id = :o"), {"o": outlet}
            )
        assert stored == 0  # swept, not only hidden at read time


async def test_dispatch_and_receive_commands_move_stock_between_outlets(
    kafka_broker: Any, tmp_path: Any
) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path}/s.db", kafka_broker.bootstrap_servers)
    async with running_stock(settings) as (app, client):
        src, dst = await make_outlet(client), await make_outlet(client)
        await receive(client, src, "kopi", 20)
        leg = f"leg-{src}"
        topic = settings.commands_topic
        bootstrap = kafka_broker.bootstrap_servers
        await send_raw(
            bootstrap,
            topic,
            [
                command(ReserveStock(outlet_id=src, sku="kopi", leg_id=leg, quantity=8)),
                command(DispatchStock(outlet_id=src, sku="kopi", leg_id=leg)),
                command(DispatchStock(outlet_id=src, sku="kopi", leg_id="no-such-leg")),
            ],
        )
        await send_raw(
            bootstrap,
            topic,
            [
                command(
                    ReceiveStock(
                        outlet_id=dst,
                        sku="kopi",
                        leg_id=leg,
                        quantity=7,
                        sent_quantity=8,
                        reason="one broken",
                    )
                )
            ],
        )

        async def arrived() -> bool:
            levels = (await client.get(f"/api/v1/outlets/{dst}/stock")).json()["levels"]
            return bool(levels)

        await wait_until(arrived, timeout=90, what="the transfer-in")
        # A receive for an outlet stock does not know records nothing there: it is
        # dead-lettered, with why (it created a level and a movement for a ghost).
        ghost = ReceiveStock(outlet_id="ghost", sku="kopi", leg_id="leg-ghost", quantity=3)
        await send_raw(bootstrap, topic, [command(ghost)])
        [dead] = await read_all(bootstrap, f"{settings.commands_group}.dlq", expect=1, timeout=60)
        assert json.loads(dead.value)["payload"]["outlet_id"] == "ghost"
        async with app.state.runtime.engine.connect() as conn:
            for table in ("stock_levels", "movements"):
                rows = await conn.scalar(
                    sa.text(f"SELECT count(*) FROM {table} WHERE outlet_id = 'ghost'")
                )
                assert rows == 0, table
        assert (await level(client, src, "kopi"))["on_hand"] == 12
        assert (await level(client, dst, "kopi"))["on_hand"] == 7
        types = [t for t, _ in await outbox_events(app, key_prefix=src)]
        assert "stock.dispatched" in types and "stock.dispatch_rejected" in types
        # The answers reach Kafka, keyed outlet:sku.
        msgs = await read_all(bootstrap, STOCK_EVENTS, expect=10**9, timeout=5)
        mine = [json.loads(m.value) for m in msgs if m.key == f"{src}:kopi".encode()]
        assert "stock.dispatched" in [e["type"] for e in mine]
