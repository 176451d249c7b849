"""One scenario of the demo against the real services: a fresh stack (its own Kafka broker
and SQLite databases, every service and the gateway as processes), seeded over the API,
then the simulated days.

The simulator plays the outside world only: customers (POS sales, never more than the
stock service says is available), the distribution center and producers (the fixed weekly
receipts), outlet staff (dispatching and receiving legs) and community suppliers
(accepting and shipping assignments). Matching, reservations and rebalancing plans are the
services' decisions. Metrics are read back from the services, not from the simulator's
bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from jejaring_devtools.stack import GATEWAY, SERVICES, Service, Stack
from jejaring_shared.contracts.topics import (
    CATALOG_EVENTS,
    STOCK_COMMANDS,
    STOCK_EVENTS,
    SUPPLIER_EVENTS,
    TRANSFER_EVENTS,
)
from jejaring_stock.config import StockSettings
from jejaring_stock.domain.model import derived_levels, smoothed_rate

from .seed import CLUSTERS, Network

CONCURRENCY = 8
REBALANCE_WEEKDAY = 1  # plans are proposed and approved on days 1, 8, 15, ...
# Every consumer group of the services and the topics it reads: the system has settled
# when each has committed up to the end of its topics.
GROUPS: dict[str, tuple[str, ...]] = {
    "stock": (STOCK_COMMANDS,),
    "transfer-stock": (STOCK_EVENTS,),
    "transfer-supplier": (SUPPLIER_EVENTS,),
    "transfer-catalog": (CATALOG_EVENTS,),
    "supplier-catalog": (CATALOG_EVENTS,),
    "supplier-transfer": (TRANSFER_EVENTS,),
}


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    auto_restock: bool
    rebalance: bool


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("a", "no balancing", auto_restock=False, rebalance=False),
    Scenario("b", "reactive matching", auto_restock=True, rebalance=False),
    Scenario("c", "reactive + weekly rebalancing", auto_restock=True, rebalance=True),
)


@dataclass
class ScenarioResult:
    key: str
    title: str
    stockout_outlet_days: int = 0
    outlet_sku_days: int = 0
    demanded: int = 0
    sold: int = 0
    units_moved: int = 0
    units_from_peers: int = 0
    units_from_suppliers: int = 0
    legs_received: int = 0
    transfer_cost: int = 0
    requests: int = 0
    plans: list[dict[str, Any]] = field(default_factory=list)
    rebalancing: str = "off"  # off | used | unavailable
    daily_stockouts: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    phase_s: dict[str, float] = field(default_factory=dict)

    @property
    def fill_rate(self) -> float:
        return self.sold / self.demanded if self.demanded else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "stockout_outlet_days": self.stockout_outlet_days,
            "outlet_sku_days": self.outlet_sku_days,
            "fill_rate": round(self.fill_rate, 4),
            "demanded": self.demanded,
            "sold": self.sold,
            "units_moved": self.units_moved,
            "units_from_peers": self.units_from_peers,
            "units_from_suppliers": self.units_from_suppliers,
            "legs_received": self.legs_received,
            "transfer_cost": self.transfer_cost,
            "requests": self.requests,
            "rebalancing": self.rebalancing,
            "plans": self.plans,
            "daily_stockouts": self.daily_stockouts,
            "wall_s": round(self.wall_s, 1),
            "errors": self.errors,
            "phase_s": {k: round(v, 1) for k, v in self.phase_s.items()},
        }


# --------------------------------------------------------------------------- the stack


def _free_block(n: int) -> int:
    """A base port with n consecutive free ports, below the kernel's ephemeral range: a port
    the OS hands out for outgoing connections (Kafka's clients make many while the stack
    starts) could be taken between this check and the service's bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    while True:
        base = rng.randrange(10_000, max(low, 10_000 + 2 * n) - n)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base


class DemoStack(Stack):
    """The `make run` stack on free ports, with the scenario's settings added."""

    def __init__(self, data: Path, extra_env: dict[str, str]) -> None:
        base = _free_block(6)  # the five services, then Kafka
        super().__init__(data, kafka_port=base + 5, base_port=base)
        self.extra_env = extra_env

    def _env(self, service: Service) -> dict[str, str]:
        env = super()._env(service)
        env.update(self.extra_env)
        return env


def scenario_env(scenario: Scenario) -> dict[str, str]:
    return {
        "JEJARING_TRANSFER_AUTO_RESTOCK": "true" if scenario.auto_restock else "false",
        # A simulated day lasts seconds: re-match waiting requests often.
        "JEJARING_TRANSFER_REMATCH_INTERVAL_S": "3",
        "JEJARING_TRANSFER_DEADLINE_POLL_S": "0.5",
        # Reorder points and maxima are pinned from the seeded history; sales during the
        # run carry the wall clock, so a refresh would only see partial days anyway.
        "JEJARING_STOCK_VELOCITY_INTERVAL_S": "86400",
        "JEJARING_STOCK_SWEEP_INTERVAL_S": "5",
        "JEJARING_GATEWAY_EVENTS_ENABLED": "false",
    }


# --------------------------------------------------------------------------- Kafka side


class Watcher:
    """Reads transfer.events like an integration would (legs to act on), and tells when
    every consumer group of the services has caught up (the day is settled)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.legs: dict[str, dict[str, Any]] = {}
        self.day = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._tps: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await self._consumer.start()
        for topic in {t for ts in GROUPS.values() for t in ts} | {TRANSFER_EVENTS}:
            self._tps[topic] = await self._partitions(topic)
        self._consumer.assign(self._tps[TRANSFER_EVENTS])
        await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._loop())

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        assert self._consumer is not None
        for _ in range(200):
            parts = self._consumer.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic} never appeared")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _loop(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            for messages in batch.values():
                for m in messages:
                    self._apply(json.loads(m.value))

    def _apply(self, env: dict[str, Any]) -> None:
        kind = str(env.get("type", ""))
        if not kind.startswith("transfer.leg_"):
            return
        p = env["payload"]
        leg = self.legs.setdefault(p["leg_id"], {"id": p["leg_id"]})
        leg.update(
            request_id=p["request_id"],
            outlet_id=p["outlet_id"],
            sku=p["sku"],
            quantity=p["quantity"],
            seen_day=self.day,
        )
        if kind == "transfer.leg_assigned":
            leg.update(state="proposed", source_kind="supplier", source_id=p["supplier_id"])
        else:
            leg.update(state=p["state"], source_kind=p["source_kind"], source_id=p["source_id"])

    async def _ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(tps)
        return ends

    async def lag(self) -> int:
        assert self._admin is not None
        assert self._consumer is not None
        all_tps = [tp for tps in self._tps.values() for tp in tps]
        admin = self._admin
        ends, *offsets = await asyncio.gather(
            self._ends(all_tps), *(admin.list_consumer_group_offsets(g) for g in GROUPS)
        )
        behind = 0
        for (_group, topics), committed in zip(GROUPS.items(), offsets, strict=True):
            for topic in topics:
                for tp in self._tps[topic]:
                    meta = committed.get(tp)
                    behind += max(ends[tp] - (meta.offset if meta and meta.offset >= 0 else 0), 0)
        for tp in self._tps[TRANSFER_EVENTS]:
            behind += max(ends[tp] - await self._consumer.position(tp), 0)
        return behind

    async def settle(self, timeout: float = 180.0) -> None:
        """Until every group has applied everything, twice in a row (the relays publish
        within milliseconds of a commit, so a quiet pair of checks means a quiet system)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            if await self.lag() == 0:
                quiet += 1
                if quiet >= 2:
                    return
            else:
                quiet = 0
            await asyncio.sleep(0.15)
        raise RuntimeError(f"the services did not settle within {timeout:.0f}s")


# --------------------------------------------------------------------------- the run


class Simulation:
    def __init__(
        self,
        net: Network,
        scenario: Scenario,
        workdir: Path,
        report: Callable[[str, float], None] = lambda _msg, _adv: None,
    ) -> None:
        self.net = net
        self.scenario = scenario
        self.workdir = workdir
        self.report = report
        self.result = ScenarioResult(scenario.key, scenario.title)
        self.sem = asyncio.Semaphore(CONCURRENCY)
        self.supplier_ids: dict[str, str] = {}  # seed key -> service id
        self.offers: dict[tuple[str, str], tuple[str, int]] = {}  # (supplier id, sku) -> offer
        self.offer_terms: dict[tuple[str, str], tuple[int, int]] = {}  # price, lead time
        self.http: dict[str, httpx.AsyncClient] = {}
        self.done_legs: set[str] = set()
        self.offer_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- plumbing -----------------------------------------------------------------------

    def _lap(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.result.phase_s[phase] = self.result.phase_s.get(phase, 0.0) + now - since
        return now

    def _err(self, what: str) -> None:
        self.result.errors[what] = self.result.errors.get(what, 0) + 1

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        ok: Iterable[int] = (200, 201, 202),
        tolerate: Iterable[int] = (),
        **kw: Any,
    ) -> httpx.Response:
        async with self.sem:
            for attempt in range(5):
                try:
                    resp = await self.http[service].request(method, f"/api/v1{path}", **kw)
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                if resp.status_code == 503 and attempt < 4:  # database busy: try again
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                break
        if resp.status_code in tuple(tolerate):
            self._err(f"{method} {path.split('/')[1]} {resp.status_code}")
            return resp
        if resp.status_code not in tuple(ok):
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp

    async def gather(self, coros: Iterable[Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(*coros))

    # -- run ------------------------------------------------------------------------------

    async def run(self) -> ScenarioResult:
        started = time.monotonic()
        data = self.workdir / f"scenario-{self.scenario.key}"
        stack = DemoStack(data, scenario_env(self.scenario))
        self.report(f"{self.scenario.key}: starting Kafka and the services", 0)
        try:
            await asyncio.to_thread(stack.start, 180)
            token = stack.internal_token()
            headers = {"x-internal-token": token, "x-actor": "demo"}
            for svc in (*SERVICES, GATEWAY):
                self.http[svc.name] = httpx.AsyncClient(
                    base_url=stack.url(svc), headers=headers, timeout=60.0
                )
            watcher = Watcher(stack.broker.bootstrap_servers)
            await watcher.start()
            try:
                await self._seed(watcher)
                self.report(f"{self.scenario.key}: day 1", 1)
                for day in range(self.net.days):
                    watcher.day = day
                    await self._day(day, watcher)
                    self.report(f"{self.scenario.key}: day {day + 2}", 1)
                await self._collect(watcher)
            finally:
                await watcher.stop()
                for client in self.http.values():
                    await client.aclose()
        finally:
            self.report(f"{self.scenario.key}: stopping", 0)
            await asyncio.to_thread(stack.stop)
        self.result.wall_s = time.monotonic() - started
        return self.result

    # -- seeding --------------------------------------------------------------------------

    async def _seed(self, watcher: Watcher) -> None:
        net = self.net
        self.report(f"{self.scenario.key}: seeding catalog, outlets, suppliers", 0)
        clusters = sorted({p.cluster for p in net.products if p.cluster})
        names = dict(CLUSTERS)
        await self.gather(
            self.call("catalog", "POST", "/clusters", json={"code": c, "name": names[c]})
            for c in clusters
        )
        rows = ["sku,name,unit,category,cluster,member_made,pareto_class"]
        ranked = sorted(range(len(net.products)), key=lambda j: -float(net.mean[:, j].sum()))
        total = float(net.mean.sum())
        running, pareto = 0.0, {}
        for j in ranked:
            pareto[j] = "A" if running < 0.8 * total else ("B" if running < 0.95 * total else "C")
            running += float(net.mean[:, j].sum())
        for j, p in enumerate(net.products):
            rows.append(
                f"{p.sku},{p.name},{p.unit},,{p.cluster or ''},{str(p.member_made).lower()},"
                f"{pareto[j]}"
            )
        resp = await self.call(
            "catalog",
            "POST",
            "/products:import",
            content="\n".join(rows) + "\n",
            headers={"content-type": "text/csv"},
        )
        report = resp.json()
        if report.get("rejected"):
            raise RuntimeError(f"catalog import rejected rows: {report['errors'][:3]}")
        await self.gather(
            self.call(
                "stock",
                "POST",
                "/outlets",
                json={
                    "id": o.id,
                    "name": o.name,
                    "community": o.community,
                    "region": o.region,
                    "lat": o.lat,
                    "lon": o.lon,
                },
            )
            for o in net.outlets
        )
        for s in net.suppliers:
            body = {
                "name": s.name,
                "kind": s.kind,
                "community": s.community,
                "regions": list(s.regions),
                "clusters": list(s.clusters),
            }
            resp = await self.call("supplier", "POST", "/suppliers", json=body)
            self.supplier_ids[s.key] = str(resp.json()["id"])
        # Offers need the supplier's copy of the catalog (built from catalog.events).
        await watcher.settle()
        for s in net.suppliers:
            for offer in s.offers:
                await self._publish_offer(
                    self.supplier_ids[s.key],
                    offer.sku,
                    offer.quantity,
                    offer.unit_price,
                    offer.lead_time_hours,
                )

        # Opening stock with each level's reorder point and maximum, derived from the
        # seeded 14 days of sales history by the stock service's own rules. Ops pin them:
        # the service's own rate needs complete UTC days of wall-clock sales, which an
        # accelerated clock never completes.
        self.report(f"{self.scenario.key}: opening stock", 0)
        defaults = StockSettings()

        async def open_outlet(i: int) -> None:
            o = net.outlets[i]
            lines = ["sku,quantity,reorder_point,maximum"]
            for j in range(len(net.products)):
                if net.carried[i, j]:
                    rate = smoothed_rate(
                        (int(u) for u in net.history[:, i, j]), defaults.velocity_alpha
                    )
                    rop, maximum = derived_levels(
                        rate,
                        lead_time_days=defaults.default_lead_time_days,
                        safety_stock=0,
                        review_days=defaults.review_days,
                    )
                    lines.append(
                        f"{net.products[j].sku},{int(net.opening[i, j])},{rop},{max(maximum, rop)}"
                    )
            await self.call(
                "stock",
                "POST",
                f"/outlets/{o.id}/opening-stock",
                content="\n".join(lines) + "\n",
                headers={"content-type": "text/csv"},
            )

        await self.gather(open_outlet(i) for i in range(len(net.outlets)))
        await watcher.settle()

    async def _publish_offer(
        self, supplier_id: str, sku: str, quantity: int, price: int, lead: int
    ) -> None:
        for _ in range(100):
            resp = await self.call(
                "supplier",
                "POST",
                f"/suppliers/{supplier_id}/offers",
                json={
                    "sku": sku,
                    "quantity": quantity,
                    "unit_price": price,
                    "lead_time_hours": lead,
                },
                ok=(201,),
                tolerate=(422,),
            )
            if resp.status_code == 201:
                self.offers[(supplier_id, sku)] = (str(resp.json()["id"]), quantity)
                self.offer_terms[(supplier_id, sku)] = (price, lead)
                return
            await asyncio.sleep(0.2)  # the catalog has not reached the supplier yet
        raise RuntimeError(f"supplier {supplier_id} could not offer {sku}")

    # -- one day ---------------------------------------------------------------------------

    async def _day(self, day: int, watcher: Watcher) -> None:
        net = self.net
        # Morning: what arrives, what leaves.
        t = time.monotonic()
        todays = [d for d in net.deliveries if d.day == day]
        await self.gather(
            self._deliver(d.outlet, d.sku, d.quantity, d.supplier, day) for d in todays
        )
        t = self._lap("deliveries", t)
        await self._play_legs(day, watcher)
        t = self._lap("legs", t)
        await watcher.settle()
        t = self._lap("settle morning", t)
        if self.scenario.rebalance and day % 7 == REBALANCE_WEEKDAY:
            await self._rebalance(day)
            await watcher.settle()
            t = self._lap("rebalancing", t)

        # The trading day: customers buy what is on the shelf (available), never more.
        levels = await self._levels()
        t = self._lap("read levels", t)
        sold_total = 0

        async def sell(i: int) -> int:
            o = net.outlets[i]
            lines: list[dict[str, Any]] = []
            units = 0
            at = datetime.now(UTC).isoformat()
            for j, p in enumerate(net.products):
                want = int(net.demand[day, i, j])
                if want <= 0 or not net.carried[i, j]:
                    continue
                q = min(want, max(levels[o.id].get(p.sku, 0), 0))
                if q > 0:
                    lines.append(
                        {
                            "idempotency_key": f"d{day}-{j}",
                            "sku": p.sku,
                            "quantity": q,
                            "sold_at": at,
                        }
                    )
                    units += q
            if not lines:
                return 0
            resp = await self.call("stock", "POST", f"/outlets/{o.id}/sales", json={"lines": lines})
            dup = set(resp.json().get("duplicates", []))
            return units - sum(int(x["quantity"]) for x in lines if x["idempotency_key"] in dup)

        for n in await self.gather(sell(i) for i in range(len(net.outlets))):
            sold_total += n
        self.result.sold += sold_total
        self.result.demanded += int((net.demand[day] * net.carried).sum())
        t = self._lap("sales", t)
        await watcher.settle()
        t = self._lap("settle sales", t)

        # End of day: stockouts as the stock service sees them.
        levels = await self._levels()
        self._lap("read levels", t)
        out = sum(1 for lv in levels.values() for a in lv.values() if a <= 0)
        self.result.daily_stockouts.append(out)
        self.result.stockout_outlet_days += out
        self.result.outlet_sku_days += sum(len(lv) for lv in levels.values())

    async def _deliver(self, i: int, j: int, qty: int, supplier_key: str | None, day: int) -> None:
        body: dict[str, Any] = {
            "idempotency_key": f"plan-{day}-{j}",
            "sku": self.net.products[j].sku,
            "quantity": qty,
            "source": "distribution_center",
            "reference": f"weekly plan day {day + 1}",
        }
        if supplier_key is not None:
            body["source"] = "supplier"
            body["supplier_id"] = self.supplier_ids[supplier_key]
        await self.call("stock", "POST", f"/outlets/{self.net.outlets[i].id}/receipts", json=body)

    async def _levels(self) -> dict[str, dict[str, int]]:
        async def one(outlet_id: str) -> tuple[str, dict[str, int]]:
            resp = await self.call("stock", "GET", f"/outlets/{outlet_id}/stock")
            return outlet_id, {lv["sku"]: int(lv["available"]) for lv in resp.json()["levels"]}

        return dict(await self.gather(one(o.id) for o in self.net.outlets))

    async def _play_legs(self, day: int, watcher: Watcher) -> None:
        """Outlet staff dispatch what was reserved and receive what is on its way (a day
        each); suppliers accept and ship what they were assigned the day before."""
        acts: list[Awaitable[None]] = []
        for leg in list(watcher.legs.values()):
            if leg["id"] in self.done_legs or leg["seen_day"] >= day:
                continue
            state = leg["state"]
            if state == "reserved" and leg["source_kind"] == "outlet":
                acts.append(self._dispatch(leg))
            elif state == "proposed" and leg["source_kind"] == "supplier":
                acts.append(self._supply(leg))
            elif state in ("dispatched", "shipped"):
                acts.append(self._receive(leg))
        await self.gather(acts)

    async def _dispatch(self, leg: dict[str, Any]) -> None:
        await self.call("transfer", "POST", f"/transfers/{leg['id']}/dispatch", tolerate=(409,))
        leg["seen_day"] = 10**9  # wait for the next event about it

    async def _receive(self, leg: dict[str, Any]) -> None:
        await self.call(
            "transfer",
            "POST",
            f"/transfers/{leg['id']}/receive",
            json={"quantity": leg["quantity"]},
            tolerate=(409,),
        )
        self.done_legs.add(leg["id"])

    async def _supply(self, leg: dict[str, Any]) -> None:
        """The supplier accepts and ships from its stock on call, then offers what is
        left (an offer is the supplier's stock, not a tap)."""
        sid, sku, qty = leg["source_id"], leg["sku"], int(leg["quantity"])
        base = f"/suppliers/{sid}/assignments/{leg['id']}"
        leg["seen_day"] = 10**9
        resp = await self.call("supplier", "POST", f"{base}/accept", tolerate=(404, 409))
        if resp.status_code != 200:
            return
        async with self.offer_locks.setdefault((sid, sku), asyncio.Lock()):
            await self._ship(sid, sku, qty, base)

    async def _ship(self, sid: str, sku: str, qty: int, base: str) -> None:
        offer = self.offers.get((sid, sku))
        left = offer[1] if offer else 0
        ship = min(qty, left) if offer else qty
        if offer is not None:
            await self.call("supplier", "POST", f"/suppliers/{sid}/offers/{offer[0]}/withdraw")
            del self.offers[(sid, sku)]
        if ship <= 0:
            await self.call(
                "supplier", "POST", f"{base}/decline", json={"reason": "sold out"}, tolerate=(409,)
            )
            return
        await self.call(
            "supplier", "POST", f"{base}/ship", json={"quantity": ship}, tolerate=(409,)
        )
        if left - ship > 0:
            price, lead = self.offer_terms[(sid, sku)]
            await self._publish_offer(sid, sku, left - ship, price, lead)

    async def _rebalance(self, day: int) -> None:
        resp = await self.call(
            "transfer",
            "POST",
            "/rebalancing/plans",
            json={"skus": None, "horizon_days": 7, "max_lines": 500},
            ok=(201,),
            tolerate=(404, 405),
        )
        if resp.status_code in (404, 405):
            self.result.rebalancing = "unavailable"
            return
        plan = resp.json()
        approved: dict[str, Any] = {}
        if plan.get("lines"):
            r = await self.call(
                "transfer",
                "POST",
                f"/rebalancing/plans/{plan['id']}/approve",
                json={"lines": None},
            )
            approved = r.json()
        self.result.rebalancing = "used"
        self.result.plans.append(
            {
                "day": day + 1,
                "id": plan.get("id"),
                "totals": plan.get("totals"),
                "status": approved.get("status", plan.get("status")),
            }
        )

    # -- the figures, read back -----------------------------------------------------------

    async def _collect(self, watcher: Watcher) -> None:
        # Receive what is still on its way, so units moved count every dispatched unit.
        await self._play_legs(self.net.days + 1, watcher)
        await watcher.settle()
        kpis = (await self.call("transfer", "GET", "/kpis")).json()
        self.result.units_from_peers = int(kpis["filled_units"]["peers"])
        self.result.units_from_suppliers = int(kpis["filled_units"]["suppliers"])
        self.result.units_moved = self.result.units_from_peers + self.result.units_from_suppliers
        self.result.requests = int(kpis["requests"])
        received = [leg for leg in watcher.legs.values() if leg["state"] == "received"]
        self.result.legs_received = len(received)

        async def cost(leg_id: str) -> int:
            body = (await self.call("transfer", "GET", f"/transfers/{leg_id}")).json()
            terms = body.get("terms") or {}
            return round(float(terms.get("transport", 0)) + float(terms.get("price", 0)))

        self.result.transfer_cost = sum(await self.gather(cost(leg["id"]) for leg in received))


def default_workdir() -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp"))
