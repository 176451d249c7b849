"""The event backbone on a real Kafka broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_shared.app import create_service_app
from jejaring_shared.contracts import Envelope
from support import probe
from support.kafka_io import read_all, send_raw
from support.wait import wait_until

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def topic() -> str:
    """A topic (and so a consumer group) of this test's own on the shared broker."""
    return f"probe.t{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            yield client


def probe_app(db_url: str, bootstrap: str, topic: str, **kw: Any) -> FastAPI:
    return create_service_app(
        probe.definition(topic=topic, **kw), probe.settings(db_url, bootstrap)
    )


def things(keys: int, per_key: int, start: int = 0) -> list[dict[str, Any]]:
    """Interleaved keys, each with an increasing seq."""
    return [{"key": f"k{k}", "seq": s} for s in range(start, start + per_key) for k in range(keys)]


async def post_all(
    client: httpx.AsyncClient, items: list[dict[str, Any]], per_request: int
) -> None:
    for i in range(0, len(items), per_request):
        resp = await client.post("/things", json=items[i : i + per_request])
        assert resp.status_code == 201, resp.text


def assert_in_order_per_key(rows: list[tuple[str, str, int, str]]) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for _event_id, key, seq, _by in rows:
        seqs[key].append(seq)
    for key, got in seqs.items():
        assert got == sorted(got), f"key {key} applied out of order"


async def effect_count(app: FastAPI) -> int:
    return len(await probe.effects(app.state.runtime.engine))


async def test_writes_while_broker_down_arrive_once_in_order(
    db_url: str, private_broker: Any, topic: str
) -> None:
    app = probe_app(db_url, private_broker.bootstrap_servers, topic)
    async with running(app) as client:
        # Running normally first, so producer and consumer must survive the outage.
        await post_all(client, things(keys=25, per_key=4), per_request=100)
        await wait_until(lambda: _count_at_least(app, 100), what="100 effects before")
        await asyncio.to_thread(private_broker.stop)
        # 5,000 events while the broker is down: every write succeeds.
        await post_all(client, things(keys=25, per_key=200, start=4), per_request=10)
        assert await app.state.runtime.relay.backlog() == 5000
        await asyncio.to_thread(private_broker.start)
        await wait_until(lambda: _count_at_least(app, 5100), timeout=180, what="5,100 effects")
        await asyncio.sleep(1.0)  # anything extra would show up now
        rows = await probe.effects(app.state.runtime.engine)
        assert await app.state.runtime.relay.backlog() == 0
    assert len(rows) == 5100
    assert len({r[0] for r in rows}) == 5100
    assert_in_order_per_key(rows)


async def test_relay_puts_each_key_where_the_default_partitioner_does(
    db_url: str, kafka_broker: Any, topic: str
) -> None:
    """The relay builds a record batch per partition itself: a key's events must land on
    the partition any plain producer would choose, in the order they were written."""
    app = probe_app(db_url, kafka_broker.bootstrap_servers, topic, consume=False)
    async with running(app) as client:
        await post_all(client, things(keys=40, per_key=5), per_request=50)
        got = await read_all(kafka_broker.bootstrap_servers, topic, expect=200)
    assert len(got) == 200
    partitions = sorted({m.partition for m in got})
    assert len(partitions) > 1  # the 40 keys spread over the topic's partitions
    default = DefaultPartitioner()
    # The topic was created with the service's setting.
    all_partitions = list(
        range(probe.settings(db_url, kafka_broker.bootstrap_servers).kafka.partitions)
    )
    seqs: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        assert m.partition == default(m.key, all_partitions, all_partitions)
        assert dict(m.headers)["event_type"] == b"probe.thing_happened"
        seqs[m.key].append((m.partition, json.loads(m.value)["payload"]["seq"]))
    for key, placed in seqs.items():
        assert [seq for _p, seq in placed] == list(range(5)), key


async def test_service_started_while_broker_down_catches_up(
    db_url: str, private_broker: Any, topic: str
) -> None:
    private_broker.stop()
    app = probe_app(db_url, private_broker.bootstrap_servers, topic)
    async with running(app) as client:
        await post_all(client, things(keys=5, per_key=20), per_request=20)
        await asyncio.to_thread(private_broker.start)
        await wait_until(lambda: _count_at_least(app, 100), timeout=120, what="100 effects")
        rows = await probe.effects(app.state.runtime.engine)
    assert len({r[0] for r in rows}) == len(rows) == 100
    assert_in_order_per_key(rows)


async def _count_at_least(app: FastAPI, n: int) -> bool:
    return await effect_count(app) >= n


async def test_replayed_events_apply_once(db_url: str, kafka_broker: Any, topic: str) -> None:
    app = probe_app(db_url, kafka_broker.bootstrap_servers, topic)
    async with running(app) as client:
        await post_all(client, things(keys=10, per_key=20), per_request=50)
        await wait_until(lambda: _count_at_least(app, 200), what="200 effects")
        # Deliver every event a second time, exactly as the relay sent it.
        published = await read_all(kafka_broker.bootstrap_servers, topic, expect=10**9, timeout=3)
        mine = [m for m in published if _event_id(m) in await _effect_ids(app)]
        assert len(mine) == 200
        await send_raw(kafka_broker.bootstrap_servers, topic, [(m.key, m.value) for m in mine])
        metrics = app.state.runtime.metrics

        async def duplicates_seen() -> bool:
            return _sample(metrics.handled, outcome="duplicate") >= 200

        await wait_until(duplicates_seen, what="200 duplicates skipped")
        rows = await probe.effects(app.state.runtime.engine)
    assert len(rows) == 200


def _event_id(msg: Any) -> str:
    return str(json.loads(msg.value)["id"])


async def _effect_ids(app: FastAPI) -> set[str]:
    return {r[0] for r in await probe.effects(app.state.runtime.engine)}


def _sample(metric: Any, **labels: str) -> float:
    total = 0.0
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def spawn_consumer(
    db_url: str, bootstrap: str, topic: str, name: str, kill_after: int = 0
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "support.probe_proc",
            "--db",
            db_url,
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--name",
            name,
            "--kill-after-commits",
            str(kill_after),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=TESTS,
    )


async def read_line_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 60) -> str:
    """Read the process's output until a line starts with prefix; return that line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no line starting {prefix!r}; output:\n{''.join(seen[-40:])}")


async def test_sigkill_between_db_commit_and_offset_commit(
    db_url: str, kafka_broker: Any, topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    # Write and publish 20 events; nobody consumes them in this process.
    app = probe_app(db_url, bootstrap, topic, consume=False)
    async with running(app) as client:
        await post_all(client, things(keys=4, per_key=5), per_request=20)
        await wait_until(lambda: _backlog_is(app, 0), what="events published")
        engine_url = db_url
    first = spawn_consumer(engine_url, bootstrap, topic, "first", kill_after=5)
    assert first.wait(timeout=90) == -signal.SIGKILL
    second = spawn_consumer(engine_url, bootstrap, topic, "second")
    try:
        await read_line_until(second, "assigned 6")
        app2 = probe_app(db_url, bootstrap, topic, consume=False)
        async with running(app2):
            await wait_until(lambda: _count_at_least(app2, 20), what="20 effects")
            rows = await probe.effects(app2.state.runtime.engine)
        # The 20 effects may all be the first consumer's (one fetch, one commit): wait for
        # the second to be handed that batch again before stopping it.
        while True:
            line = await read_line_until(second, "handled ")
            if json.loads(line.split(" ", 1)[1]).get("duplicate", 0) >= 1:
                break
    finally:
        second.send_signal(signal.SIGTERM)
        stats = json.loads((await read_line_until(second, "stats ")).split(" ", 1)[1])
        second.wait(timeout=30)
    assert len(rows) == 20
    assert len({r[0] for r in rows}) == 20
    # Killed right after the commit that applied its fifth event (a fetched batch commits
    # together, so that commit may have applied more), before the offsets were committed.
    assert sum(1 for r in rows if r[3] == "first") >= 5
    # The killed consumer's work came back and was recognised, not applied again.
    assert stats["handled"].get("duplicate", 0) >= 1


async def _backlog_is(app: FastAPI, n: int) -> bool:
    backlog: int = await app.state.runtime.relay.backlog()
    return backlog == n


async def test_poison_messages_go_to_dead_letters(
    db_url: str, kafka_broker: Any, topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app = probe_app(db_url, bootstrap, topic)
    dlq = probe.group_for(topic) + ".dlq"
    before = len(await read_all(bootstrap, dlq, expect=10**9, timeout=2))
    good = Envelope(
        type="probe.thing_happened", source="t", key="poison", payload={"key": "poison", "seq": 1}
    )
    unknown = good.model_copy(update={"type": "probe.nobody_knows"}).model_dump_json()
    invalid = Envelope(
        type="probe.thing_happened", source="t", key="poison", payload={"key": "poison", "seq": -1}
    )
    boom = Envelope(
        type="probe.thing_happened", source="t", key="poison", payload={"key": "boom", "seq": 2}
    )
    async with running(app):
        await send_raw(
            bootstrap,
            topic,
            [
                (b"poison", b"this is not json"),
                (b"poison", unknown.encode()),
                (b"poison", invalid.to_bytes()),
                (b"poison", boom.to_bytes()),
                (b"poison", good.to_bytes()),  # same partition, after all the poison
            ],
        )

        async def good_applied() -> bool:
            return str(good.id) in await _effect_ids(app)

        await wait_until(good_applied, what="the good message after the poison")
    letters = (await read_all(bootstrap, dlq, expect=before + 4))[before:]
    reasons = [dict(m.headers)["dlq_reason"].decode() for m in letters]
    assert reasons == ["unparseable", "unknown_type", "invalid_payload", "handler_failed"]
    for m in letters:
        headers = dict(m.headers)
        assert headers["dlq_topic"] == topic.encode()
        assert headers["dlq_error"]
    assert b"boom" in letters[3].value
    assert b"cannot apply" in dict(letters[3].headers)["dlq_error"]


async def test_a_failing_handler_in_a_fetched_batch_spares_the_rest(
    db_url: str, kafka_broker: Any, topic: str
) -> None:
    """A partition's fetched messages are applied in one transaction; when one handler
    fails, nothing of that try stays, and the messages are taken one at a time: the rest
    apply once, in order, and the failing one is dead-lettered."""
    bootstrap = kafka_broker.bootstrap_servers
    app = probe_app(db_url, bootstrap, topic)
    dlq = probe.group_for(topic) + ".dlq"
    before = len(await read_all(bootstrap, dlq, expect=10**9, timeout=2))

    def thing(key: str, seq: int) -> Envelope:
        return Envelope(
            type="probe.thing_happened", source="t", key="p", payload={"key": key, "seq": seq}
        )

    batch = [thing("a", 1), thing("a", 2), thing("boom", 3), thing("a", 3), thing("a", 4)]
    # Sent before the service starts, so its consumer fetches them as one batch.
    await send_raw(bootstrap, topic, [(b"p", e.to_bytes()) for e in batch])
    async with running(app):
        await wait_until(lambda: _count_at_least(app, 4), what="the four good messages")
        rows = await probe.effects(app.state.runtime.engine)
    assert [(key, seq) for _id, key, seq, _by in rows] == [("a", 1), ("a", 2), ("a", 3), ("a", 4)]
    letters = (await read_all(bootstrap, dlq, expect=before + 1))[before:]
    assert [dict(m.headers)["dlq_reason"] for m in letters] == [b"handler_failed"]
    assert str(batch[2].id).encode() in letters[0].value


async def test_two_consumers_share_and_hand_over(
    db_url: str, kafka_broker: Any, topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    a = spawn_consumer(db_url, bootstrap, topic, "a")
    b = None
    try:
        await read_line_until(a, "assigned 6")
        b = spawn_consumer(db_url, bootstrap, topic, "b")
        await read_line_until(b, "assigned 3")
        await read_line_until(a, "assigned 3")
        app = probe_app(db_url, bootstrap, topic, consume=False)
        async with running(app) as client:
            await post_all(client, things(keys=30, per_key=10), per_request=100)
            await wait_until(lambda: _count_at_least(app, 300), what="300 effects")
            by = {r[3] for r in await probe.effects(app.state.runtime.engine)}
            assert by == {"a", "b"}, by
            a.send_signal(signal.SIGTERM)
            await read_line_until(a, "stats ")
            assert a.wait(timeout=30) == 0
            await read_line_until(b, "assigned 6")
            await post_all(client, things(keys=30, per_key=10, start=10), per_request=100)
            await wait_until(lambda: _count_at_least(app, 600), what="600 effects")
            await asyncio.sleep(1.0)
            rows = await probe.effects(app.state.runtime.engine)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    assert len(rows) == 600
    assert len({r[0] for r in rows}) == 600
    assert {r[3] for r in rows[300:]} <= {"a", "b"}
    assert_in_order_per_key(rows)


async def test_shutdown_with_broker_down_is_bounded(
    db_url: str, private_broker: Any, topic: str
) -> None:
    app = probe_app(db_url, private_broker.bootstrap_servers, topic)
    manager = LifespanManager(app, startup_timeout=60, shutdown_timeout=60)
    await manager.__aenter__()
    runner = app.state.runtime.consumers[0]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        await post_all(client, things(keys=3, per_key=3), per_request=9)
        await wait_until(lambda: _count_at_least(app, 9), what="9 effects")
        assert runner.assigned
        private_broker.kill()
        await post_all(client, things(keys=3, per_key=3, start=3), per_request=9)
        resp = await client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["checks"]["kafka"] == "unavailable"
    started = time.monotonic()
    await manager.__aexit__(None, None, None)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"shutdown took {elapsed:.1f}s"
    # Nothing of aiokafka's lives on (a producer's sender retrying for the whole outage).
    await asyncio.sleep(0.1)
    left = [
        t
        for t in asyncio.all_tasks()
        if not t.done()
        and "aiokafka" in getattr(getattr(t.get_coro(), "cr_code", None), "co_filename", "")
    ]
    assert left == [], left


async def test_a_database_outage_loses_nothing(
    tmp_path: Path, kafka_broker: Any, topic: str
) -> None:
    """PostgreSQL stopped and started again under a running service (its own server, so
    no other test's database goes down): a write during the outage is refused with 503
    `database_unavailable` and changes nothing, readiness says the database is down, the
    relay and the consumer retry (never dead-letter); afterwards every event written is
    published and applied once, in order per key."""
    from jejaring_devtools.postgres import PostgresServer

    pg = PostgresServer(tmp_path / "pg")
    await asyncio.to_thread(pg.start)
    try:
        url = await asyncio.to_thread(pg.create_database, "outage")
        app = probe_app(url, kafka_broker.bootstrap_servers, topic)
        async with running(app) as client:
            await post_all(client, things(keys=5, per_key=4), per_request=5)
            await asyncio.to_thread(pg.stop)
            resp = await client.post("/things", json=[{"key": "lost", "seq": 0}])
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "database_unavailable"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")
            await asyncio.sleep(2.0)  # the relay and the consumer meet the outage
            await asyncio.to_thread(pg.start)
            await post_all(client, things(keys=5, per_key=4, start=4), per_request=5)
            await wait_until(lambda: _count_at_least(app, 40), timeout=90, what="40 effects")
            await asyncio.sleep(1.0)  # anything extra would show up now
            rows = await probe.effects(app.state.runtime.engine)
            assert await app.state.runtime.relay.backlog() == 0
            assert (await client.get("/readyz")).json()["checks"]["database"] == "ok"
    finally:
        await asyncio.to_thread(pg.stop)
    assert len(rows) == 40 and len({r[0] for r in rows}) == 40
    assert "lost" not in {r[1] for r in rows}
    assert_in_order_per_key(rows)
