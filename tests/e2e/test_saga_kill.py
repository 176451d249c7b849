"""SIGKILL the transfer service mid-saga, with stock, supplier and transfer as real processes.

Three uvicorn processes (stock, supplier, transfer; SQLite files) on a private broker. Two
sagas are in flight when transfer is killed:

- a peer leg already reserved at the donor, not yet dispatched;
- a supplier leg waiting for the supplier's acceptance, whose accept_by passes while
  transfer is down.

After the restart the stored deadline fires at once (the leg times out and the request is
re-matched to the next supplier), and both sagas run to `fulfilled`. Transfer is killed a
second time right after a dispatch was answered 202: the stock.dispatch command committed
to the outbox still reaches stock.

The catalog service is not started: its `catalog.product_created` event is sent to the
topic directly (the supplier only needs its catalog projection).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from jejaring_shared.contracts import utcnow
from jejaring_shared.contracts.catalog import ProductCreated
from support.transfer import emit, uid
from support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
ACCEPT_TIMEOUT_S = 15.0
"""Long enough for the assignment to reach the supplier's inbox on a busy machine."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    """One service as a uvicorn process; `start()` again after a kill reuses its database."""

    name: str
    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    _log: TextIO | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = (self.logs / f"{self.name}.log").open("a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"jejaring_{self.name}.entrypoints.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env={**os.environ, **self.env},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def ready(self) -> None:
        """/readyz answers 200 and every consumer group has its partitions."""

        async def check() -> bool:
            try:
                async with httpx.AsyncClient(base_url=self.base, timeout=2) as c:
                    resp = await c.get("/readyz")
            except httpx.HTTPError:
                return False
            consumers = resp.json().get("checks", {}).get("consumers", {})
            return resp.status_code == 200 and all(v["assigned"] for v in consumers.values())

        await wait_until(check, timeout=120, what=f"{self.name} process ready")


def sqlite_count(db: Path, sql: str, *params: Any) -> int:
    """Read a service's SQLite file directly (WAL lets a reader in beside the process)."""
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


async def until_count(db: Path, sql: str, *params: Any, what: str) -> None:
    async def check() -> bool:
        return await asyncio.to_thread(sqlite_count, db, sql, *params) > 0

    await wait_until(check, timeout=60, what=what)


def legs(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(leg["source_id"], leg["state"]) for leg in body["legs"]]


async def until(
    base: str, rid: str, ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:

        async def check() -> Any:
            resp = await c.get(f"/api/v1/restock-requests/{rid}")
            body = resp.json()
            return body if resp.status_code == 200 and ok(body) else None

        result: dict[str, Any] = await wait_until(check, timeout=timeout, what=what)
        return result


async def call(base: str, method: str, path: str, *codes: int, **kw: Any) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        resp = await c.request(method, path, **kw)
    assert resp.status_code in (codes or (200, 201, 202)), (path, resp.status_code, resp.text)
    return resp.json()


async def test_sigkill_transfer_mid_saga_across_services(
    tmp_path: Path, private_broker: Any
) -> None:
    bs = private_broker.bootstrap_servers
    common = {"JEJARING_KAFKA_BOOTSTRAP_SERVERS": bs}
    dbs = {name: tmp_path / f"{name}.db" for name in ("stock", "supplier", "transfer")}
    stock = Service(
        "stock",
        {
            **common,
            "JEJARING_STOCK_DATABASE_URL": f"sqlite+aiosqlite:///{dbs['stock']}",
            "JEJARING_STOCK_RELAY_IDLE_POLL_S": "0.1",
        },
        tmp_path,
    )
    supplier = Service(
        "supplier",
        {
            **common,
            "JEJARING_SUPPLIER_DATABASE_URL": f"sqlite+aiosqlite:///{dbs['supplier']}",
            "JEJARING_SUPPLIER_RELAY_IDLE_POLL_S": "0.1",
        },
        tmp_path,
    )
    transfer = Service(
        "transfer",
        {
            **common,
            "JEJARING_TRANSFER_DATABASE_URL": f"sqlite+aiosqlite:///{dbs['transfer']}",
            "JEJARING_TRANSFER_RELAY_IDLE_POLL_S": "0.1",
            "JEJARING_TRANSFER_ACCEPT_TIMEOUT_S": str(ACCEPT_TIMEOUT_S),
            "JEJARING_TRANSFER_DEADLINE_POLL_S": "0.2",
            "JEJARING_TRANSFER_REMATCH_INTERVAL_S": "0.5",
        },
        tmp_path,
    )
    services = (stock, supplier, transfer)
    try:
        for service in services:
            service.start()
        for service in services:
            await service.ready()

        # -- the network: two outlets in stock, two suppliers with offers -------------------
        dest, donor = uid("o"), uid("o")
        peer_sku, supplied_sku = uid("sku"), uid("sku")
        for oid, lat in ((dest, -6.20), (donor, -6.21)):
            await call(
                stock.base,
                "POST",
                "/api/v1/outlets",
                json={
                    "id": oid,
                    "name": oid,
                    "community": "c1",
                    "region": "r1",
                    "lat": lat,
                    "lon": 106.8,
                },
            )
        await call(
            stock.base,
            "PUT",
            f"/api/v1/outlets/{donor}/stock/{peer_sku}/settings",
            json={"reorder_point": 10, "maximum": 1000},
        )
        await call(
            stock.base,
            "POST",
            f"/api/v1/outlets/{donor}/receipts",
            json={
                "idempotency_key": uid("r"),
                "sku": peer_sku,
                "quantity": 100,
                "source": "distribution_center",
            },
        )
        await emit(
            bs,
            (
                ProductCreated(
                    sku=supplied_sku, name="Gula aren", unit="kg", case_pack=1, min_transfer_qty=1
                ),
                supplied_sku,
                None,
            ),
        )
        await until_count(
            dbs["supplier"],
            "SELECT count(*) FROM catalog_products WHERE sku = ?",
            supplied_sku,
            what="supplier knows the product",
        )
        suppliers = []
        for name, price in (("Cheap", 800), ("Dear", 1500)):
            sup = await call(
                supplier.base,
                "POST",
                "/api/v1/suppliers",
                json={"name": name, "kind": "small_producer", "community": "c1"},
            )
            await call(
                supplier.base,
                "POST",
                f"/api/v1/suppliers/{sup['id']}/offers",
                json={
                    "sku": supplied_sku,
                    "quantity": 100,
                    "unit_price": price,
                    "lead_time_hours": 12,
                },
            )
            suppliers.append(str(sup["id"]))
        cheap, dear = suppliers
        await until_count(
            dbs["transfer"],
            "SELECT count(*) = 2 FROM offers_view WHERE sku = ? AND status = 'active'",
            supplied_sku,
            what="transfer knows both offers",
        )
        await until_count(
            dbs["transfer"],
            "SELECT count(*) FROM stock_view WHERE outlet_id = ? AND sku = ? AND available = 100",
            donor,
            peer_sku,
            what="transfer knows the donor's stock",
        )
        await until_count(
            dbs["transfer"],
            "SELECT count(*) = 2 FROM outlets_view WHERE outlet_id IN (?, ?)",
            dest,
            donor,
            what="transfer knows the outlets",
        )

        # -- two sagas in flight ----------------------------------------------------------
        peer_rid = (
            await call(
                transfer.base,
                "POST",
                "/api/v1/restock-requests",
                202,
                json={"outlet_id": dest, "sku": peer_sku, "quantity": 30},
            )
        )["id"]
        supplied_rid = (
            await call(
                transfer.base,
                "POST",
                "/api/v1/restock-requests",
                202,
                json={"outlet_id": dest, "sku": supplied_sku, "quantity": 10},
            )
        )["id"]
        await until(transfer.base, peer_rid, lambda b: legs(b) == [(donor, "reserved")], "reserved")
        body = await until(
            transfer.base, supplied_rid, lambda b: legs(b) == [(cheap, "proposed")], "assigned"
        )
        cheap_leg = body["legs"][0]
        accept_by = datetime.fromisoformat(cheap_leg["accept_by"])
        await call(supplier.base, "GET", f"/api/v1/suppliers/{cheap}/assignments/{cheap_leg['id']}")

        # -- kill transfer; the supplier's accept deadline passes while it is down --------
        transfer.kill()
        await asyncio.sleep(max(0.0, (accept_by - utcnow()).total_seconds() + 1))
        transfer.start()
        await transfer.ready()
        ready_at = utcnow()
        body = await until(
            transfer.base,
            supplied_rid,
            lambda b: legs(b) == [(cheap, "timed_out"), (dear, "proposed")],
            "timed out and re-matched",
        )
        timed_out_at = datetime.fromisoformat(body["legs"][0]["updated_at"])
        assert timed_out_at >= accept_by
        assert (timed_out_at - ready_at).total_seconds() < 10  # fired at once, not stuck
        assert f"supplier:{cheap}" in body["excluded_sources"]

        # -- the next supplier accepts (before its own accept_by) -------------------------
        dear_leg = body["legs"][1]["id"]
        await until_count(
            dbs["supplier"],
            "SELECT count(*) FROM assignments WHERE leg_id = ?",
            dear_leg,
            what="assignment in the next supplier's inbox",
        )
        await call(supplier.base, "POST", f"/api/v1/suppliers/{dear}/assignments/{dear_leg}/accept")
        await until(
            transfer.base,
            supplied_rid,
            lambda b: legs(b) == [(cheap, "timed_out"), (dear, "accepted")],
            "accepted",
        )

        # -- the peer saga: dispatch, killed again right after the 202 ---------------------
        peer_leg = (await call(transfer.base, "GET", f"/api/v1/restock-requests/{peer_rid}"))[
            "legs"
        ][0]["id"]
        await call(transfer.base, "POST", f"/api/v1/transfers/{peer_leg}/dispatch", 202)
        transfer.kill()
        transfer.start()
        await transfer.ready()
        await until(transfer.base, peer_rid, lambda b: legs(b) == [(donor, "dispatched")], "sent")
        await call(
            transfer.base,
            "POST",
            f"/api/v1/transfers/{peer_leg}/receive",
            202,
            json={"quantity": 30},
        )

        # -- the supplier ships; the outlet receives --------------------------------------
        await call(
            supplier.base,
            "POST",
            f"/api/v1/suppliers/{dear}/assignments/{dear_leg}/ship",
            json={"quantity": 10},
        )
        await until(
            transfer.base,
            supplied_rid,
            lambda b: legs(b) == [(cheap, "timed_out"), (dear, "shipped")],
            "shipped",
        )
        await call(
            transfer.base,
            "POST",
            f"/api/v1/transfers/{dear_leg}/receive",
            202,
            json={"quantity": 10},
        )

        # -- both complete; stock agrees ---------------------------------------------------
        peer = await until(transfer.base, peer_rid, lambda b: b["status"] == "fulfilled", "done")
        supplied = await until(
            transfer.base, supplied_rid, lambda b: b["status"] == "fulfilled", "done"
        )
        assert (peer["received"], supplied["received"]) == (30, 10)

        async def settled() -> bool:
            lv = await call(stock.base, "GET", f"/api/v1/outlets/{donor}/stock/{peer_sku}")
            d1 = await call(stock.base, "GET", f"/api/v1/outlets/{dest}/stock/{peer_sku}")
            d2 = await call(stock.base, "GET", f"/api/v1/outlets/{dest}/stock/{supplied_sku}")
            return (lv["on_hand"], lv["reserved"], d1["on_hand"], d2["on_hand"]) == (70, 0, 30, 10)

        await wait_until(settled, timeout=30, what="stock levels settled")
    finally:
        for service in reversed(services):
            service.stop()
