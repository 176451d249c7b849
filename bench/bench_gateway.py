"""The gateway: what going through it costs, against calling the service directly.

gateway.throughput_ratio
    Requests/s of `GET /api/v1/clusters` through the gateway (API key checked, rate limit
    off in effect, routed, pooled connection to the service) over requests/s of the same
    call made straight to the catalog service (with the internal credential), in the same
    run: 16 keep-alive connections, N requests each side. Both are uvicorn processes as
    `make run` starts them (SQLite catalog; Kafka unused by this route).
gateway.added_p99
    p99 latency through the gateway minus p99 direct, one request at a time (M requests
    each side), in PAIRS rounds of direct -> gateway; the figure is the median of the
    rounds' differences (a p99 of one round is its tenth-slowest request, and a stall of
    the SQLite catalog behind both moves it by several ms; the median of paired rounds
    keeps that noise out of the comparison).
gateway.noisy_key_p99_ratio
    One key floods a gateway with the default limits (50/s, bursts of 100) at 1,000 req/s
    while another key, pacing itself under its limit, is timed one request at a time: p99
    of its requests during the sustained flood over p99 with the flood off, in interleaved
    blocks (`jejaring_devtools.flood.noisy_neighbour`; the flood's first 1.5 s, which
    spends the burst, is not measured). The flood runs under SCHED_IDLE on one core, as if
    it came from another machine. Goal: at most 2x.

Each rep: direct -> gateway, so the two alternate and share drift. One warm-up rep first.
The client is a plain asyncio HTTP/1.1 client (httpx would be the bottleneck).
"""

from __future__ import annotations

import asyncio
import subprocess
import time

from bench.harness import (
    REPEATS,
    Context,
    Result,
    median,
    read_response,
    spawn_service,
    stop_services,
)
from jejaring_devtools.flood import NoisyNeighbour, QuietKeyRefused, noisy_neighbour
from jejaring_devtools.stats import percentile
from jejaring_gateway.adapters.keystore import KeyStore

N_FULL, N_QUICK = 4_000, 800
M_FULL, M_QUICK = 1_000, 200
PAIRS_FULL, PAIRS_QUICK = 7, 3
CONNECTIONS = 16
TOKEN = "bench-internal-token-0123456789"
GOAL_RATIO = 0.5
GOAL_ADDED_MS = 5.0
GOAL_NOISY_RATIO = 2.0
BLOCKS_FULL, BLOCKS_QUICK = 8, 3
SAMPLES_FULL, SAMPLES_QUICK = 150, 100
PATH = "/api/v1/clusters"
GATEWAY_APP = "jejaring_gateway.entrypoints.app:create_app"


async def _connection(port: int, headers: str, n: int, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status, _body = await read_response(reader)
            if status != 200:
                raise RuntimeError(f"status {status}")
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def _throughput(port: int, headers: str, n: int) -> float:
    lat: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, headers, n // CONNECTIONS, lat) for _ in range(CONNECTIONS))
    )
    return len(lat) / (time.perf_counter() - started)


async def _p99(port: int, headers: str, m: int) -> float:
    lat: list[float] = []
    await _connection(port, headers, m, lat)
    return percentile(lat, 99)


async def run(ctx: Context) -> list[Result]:
    n, m = (N_QUICK, M_QUICK) if ctx.quick else (N_FULL, M_FULL)
    pairs = PAIRS_QUICK if ctx.quick else PAIRS_FULL
    workdir = ctx.workdir / "gateway"
    workdir.mkdir(parents=True, exist_ok=True)
    gw_db = f"sqlite+aiosqlite:///{workdir}/gateway.db"
    store = await KeyStore.open(gw_db)
    try:
        _rec, key = await store.issue("ops", None, "bench")
        _rec, noisy = await store.issue("ops", None, "bench noisy")
        _rec, quiet = await store.issue("ops", None, "bench quiet")
    finally:
        await store.close()
    common = {
        "JEJARING_INTERNAL_TOKEN": TOKEN,
        "JEJARING_KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap_servers,
    }
    procs: list[subprocess.Popen[bytes]] = []

    def gateway_env(cport: int, **limits: str) -> dict[str, str]:
        return {
            **common,
            "JEJARING_GATEWAY_DATABASE_URL": gw_db,
            "JEJARING_GATEWAY_CATALOG_URL": f"http://127.0.0.1:{cport}",
            "JEJARING_GATEWAY_EVENTS_ENABLED": "false",
            **limits,
        }

    try:
        ctx.status("starting the catalog service and the gateway")
        catalog, cport = spawn_service(
            "jejaring_catalog.entrypoints.app:create_app",
            {
                **common,
                "JEJARING_CATALOG_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/catalog.db",
            },
            workdir,
            "catalog",
        )
        procs.append(catalog)
        gateway, gport = spawn_service(
            GATEWAY_APP,
            gateway_env(
                cport,
                JEJARING_GATEWAY_RATE_PER_S="1000000",
                JEJARING_GATEWAY_RATE_BURST="1000000",
            ),
            workdir,
            "gateway",
        )
        procs.append(gateway)
        direct_h = f"x-internal-token: {TOKEN}\r\n"
        gw_h = f"x-api-key: {key}\r\n"
        rates: dict[str, list[float]] = {"direct": [], "gateway": []}
        p99s: dict[str, list[float]] = {"direct": [], "gateway": []}
        sides = (("direct", cport, direct_h), ("gateway", gport, gw_h))
        for rep in range(REPEATS + 1):
            label = "warm-up" if rep == 0 else f"run {rep}/{REPEATS}"
            for side, port, headers in sides:
                ctx.status(f"{label}: {side} throughput ({n:,} requests)")
                rate = await _throughput(port, headers, n if rep else n // 4)
                if rep:
                    rates[side].append(rate)
        for rep in range(pairs + 1):
            label = "warm-up" if rep == 0 else f"round {rep}/{pairs}"
            for side, port, headers in sides:
                ctx.status(f"{label}: {side} latency ({m:,} requests, one at a time)")
                p99 = await _p99(port, headers, m if rep else m // 4)
                if rep:
                    p99s[side].append(p99)
        ctx.status("the noisy-key flood against a gateway with the default limits")
        # The default limits (50/s, bursts of 100), as a deployment has them.
        limited, lport = spawn_service(GATEWAY_APP, gateway_env(cport), workdir, "gateway-limited")
        procs.append(limited)
        blocks, samples = (
            (BLOCKS_QUICK, SAMPLES_QUICK) if ctx.quick else (BLOCKS_FULL, SAMPLES_FULL)
        )
        seen: NoisyNeighbour | str
        try:
            seen = await noisy_neighbour(
                f"http://127.0.0.1:{lport}", noisy, quiet, blocks=blocks, samples=samples
            )
        except (QuietKeyRefused, RuntimeError) as exc:
            seen = str(exc)  # reported as not met; the figures above still stand
    finally:
        stop_services(procs)
    direct, through = median(rates["direct"]), median(rates["gateway"])
    p99_direct, p99_gw = median(p99s["direct"]) * 1000, median(p99s["gateway"]) * 1000
    ratio = through / direct
    added = median([(g - d) * 1000 for d, g in zip(p99s["direct"], p99s["gateway"], strict=True)])
    return [
        Result(
            name="gateway.throughput_ratio",
            value=round(ratio, 3),
            unit="x direct",
            reference="the catalog service called directly, same run",
            reference_value=round(direct, 1),
            ratio=round(ratio, 3),
            goal=f">= {GOAL_RATIO}x direct",
            met=ratio >= GOAL_RATIO,
            extra={
                "gateway_rps": round(through, 1),
                "direct_rps": round(direct, 1),
                "connections": CONNECTIONS,
                "n": n,
                "samples": rates,
            },
        ),
        Result(
            name="gateway.added_p99",
            value=round(added, 3),
            unit="ms",
            reference="p99 direct (ms), same run",
            reference_value=round(p99_direct, 3),
            ratio=round(p99_gw / p99_direct, 3) if p99_direct else None,
            goal=f"<= {GOAL_ADDED_MS} ms added at p99",
            met=added <= GOAL_ADDED_MS,
            extra={
                "p99_gateway_ms": round(p99_gw, 3),
                "p99_direct_ms": round(p99_direct, 3),
                "m": m,
                "rounds": pairs,
                "samples_ms": {k: [round(v * 1000, 3) for v in vs] for k, vs in p99s.items()},
            },
        ),
        _noisy_result(seen, blocks),
    ]


def _noisy_result(seen: NoisyNeighbour | str, blocks: int) -> Result:
    result = Result(
        name="gateway.noisy_key_p99_ratio",
        value=None,
        unit="x unloaded p99",
        reference="the quiet key's p99 with the flood off (ms), same run",
        goal=f"<= {GOAL_NOISY_RATIO}x while another key sends 1,000 req/s",
        met=False,
        extra={"blocks": blocks},
    )
    if isinstance(seen, str):
        result.extra["error"] = seen
        return result
    result.value = result.ratio = round(seen.p99_ratio, 3)
    result.reference_value = round(percentile(seen.unloaded, 99) * 1000, 3)
    result.met = seen.p99_ratio <= GOAL_NOISY_RATIO
    result.extra.update(seen.figures())
    return result
