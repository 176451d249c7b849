"""Must-show, on real processes (uvicorn, as `make run` starts them): a 50 MB body is
refused with 413 without the gateway's memory growing past a bound (RSS measured), and
one key sending 1,000 requests/s gets 429s while another key is served throughout (how
much the flood slows that key is measured by `make bench`, gateway.noisy_key_p99_ratio)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from jejaring_devtools.flood import noisy_neighbour
from jejaring_devtools.paths import free_port
from jejaring_devtools.uvicorn_proc import spawn_uvicorn, wait_healthy
from jejaring_gateway.adapters.keystore import KeyStore
from jejaring_gateway.domain.identity import parse_role

TOKEN = "e2e-internal-token-0123456789"
MB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    url: str

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def _spawn(target: str, env: dict[str, str], tmp: Path, name: str) -> Proc:
    port = free_port()
    log = tmp / f"{name}.log"
    proc = spawn_uvicorn(target, port, env, tmp, log, log_level="warning")
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, log)
    return Proc(proc, url)


@contextlib.contextmanager
def stack(tmp: Path, **gateway_env: str) -> Iterator[tuple[Proc, Proc]]:
    common = {
        "JEJARING_INTERNAL_TOKEN": TOKEN,
        "JEJARING_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "JEJARING_KAFKA_REQUEST_TIMEOUT_S": "1",
    }
    catalog = _spawn(
        "jejaring_catalog.entrypoints.app:create_app",
        {**common, "JEJARING_CATALOG_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/catalog.db"},
        tmp,
        "catalog",
    )
    gateway = None
    try:
        gateway = _spawn(
            "jejaring_gateway.entrypoints.app:create_app",
            {
                **common,
                "JEJARING_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/gateway.db",
                "JEJARING_GATEWAY_CATALOG_URL": catalog.url,
                "JEJARING_GATEWAY_STOCK_URL": catalog.url,
                "JEJARING_GATEWAY_EVENTS_ENABLED": "false",
                **gateway_env,
            },
            tmp,
            "gateway",
        )
        yield gateway, catalog
    finally:
        for p in (gateway, catalog):
            if p is not None:
                os.killpg(p.proc.pid, signal.SIGTERM)
                p.proc.wait(15)


async def issue(tmp: Path, role: str) -> str:
    store = await KeyStore.open(f"sqlite+aiosqlite:///{tmp}/gateway.db")
    try:
        kind, subject = parse_role(role)
        return (await store.issue(kind, subject, label="e2e"))[1]
    finally:
        await store.close()


async def send_declared(url: str, path: str, key: str, length: int) -> int:
    """Headers that declare `length` bytes, then wait for the answer without sending them."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


async def send_chunked(url: str, path: str, key: str, total: int) -> tuple[int, int]:
    """POST `total` bytes chunked (no Content-Length), stopping as soon as an answer comes.
    Returns (status, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(head.encode())
    answer = asyncio.create_task(reader.readline())
    chunk = b"x" * (256 * 1024)
    sent = 0
    past_limits = 21 * MB  # above both the JSON (1 MiB) and the CSV (20 MiB) limit
    try:
        while sent < total and not answer.done():
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)
            if sent > past_limits:
                # Past every limit the gateway should already be answering: give a busy
                # machine time to deliver that answer before sending more.
                await asyncio.wait({answer}, timeout=5.0)
        if not answer.done():
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    status_line = await asyncio.wait_for(answer, 30)
    writer.close()
    return int(status_line.split()[1]), sent


async def test_50mb_body_is_413_without_memory_growth(tmp_path: Path) -> None:
    await issue(tmp_path, "admin")  # creates the database before the gateway migrates it
    with stack(tmp_path) as (gateway, _catalog):
        key = await issue(tmp_path, "admin")
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            for _ in range(20):  # warm up: pools, caches
                await client.get("/api/v1/clusters", headers={"x-api-key": key})
            before = gateway.rss_mb()
        # Declared too large: refused before a byte of the body is read.
        status = await send_declared(gateway.url, "/api/v1/products", key, 50 * MB)
        assert status == 413
        peak = before
        for path in ("/api/v1/products", "/api/v1/products:import"):  # JSON 1 MiB, CSV 20 MiB
            for _ in range(2):
                status, sent = await send_chunked(gateway.url, path, key, 50 * MB)
                peak = max(peak, gateway.rss_mb())
                assert status == 413, (path, status)
                assert sent < 50 * MB, "the gateway read the whole body"
        growth = gateway.rss_mb() - before
        print(json.dumps({"rss_before_mb": before, "rss_peak_mb": peak, "growth_mb": growth}))
        assert growth < 25, f"gateway RSS grew {growth:.1f} MB ({before:.1f} -> {peak:.1f})"


# Timing verdicts belong to the benchmarks: how much the flood slows the other key is
# `gateway.noisy_key_p99_ratio` in `make bench` (goal <= 2x, the same protocol with more
# samples). Here: the flood is refused and the other key is served, every time.
BLOCKS = 2
SAMPLES = 100


async def test_one_noisy_key_is_limited_and_others_keep_being_served(tmp_path: Path) -> None:
    await issue(tmp_path, "ops")
    with stack(tmp_path) as (gateway, _catalog):  # the default limits: 50/s, bursts of 100
        noisy, quiet = await issue(tmp_path, "ops"), await issue(tmp_path, "ops")
        # Every quiet request must be answered 200 (quiet_latencies raises otherwise).
        seen = await noisy_neighbour(gateway.url, noisy, quiet, blocks=BLOCKS, samples=SAMPLES)
    print(json.dumps(seen.figures()))
    flood = seen.flood
    assert len(seen.loaded) == len(seen.unloaded) == BLOCKS * SAMPLES
    # About 1,000 req/s was asked for; the flood runs on idle CPU only (SCHED_IDLE), so a
    # busy machine may slow it a little.
    assert flood["rate"] > 600, flood
    # 50/s pass of ~1,000/s sent, plus the burst of 100 at each start.
    assert flood["counts"].get("429", 0) > flood["sent"] * 0.8, flood
    assert set(flood["counts"]) <= {"200", "429"}, flood
