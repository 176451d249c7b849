"""One key flooding the gateway while another key's latency is measured: the noisy-neighbour
check shared by the end-to-end test (which checks what is refused and what is served) and
the benchmark (which reports how much the flood slows the other key, `gateway.noisy_key_p99_ratio`).

Run as `python -m jejaring_devtools.flood URL KEY RATE`, this module is the flood itself:
a plain keep-alive HTTP/1.1 client (httpx alone tops out near 1,000 req/s here). A real
flood comes from another machine; here it shares the gateway's cores, so it runs on one
core under SCHED_IDLE: it takes only the CPU the system under test leaves idle, and any of
the system's processes waking up takes the core back at once. SIGUSR1 starts the flood,
SIGUSR2 pauses it (connections stay open), SIGTERM ends it and prints, as one JSON line,
what was sent and how it was answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from .stats import percentile

PATH = "/api/v1/clusters"
CONNECTIONS = 16


@dataclass
class _Clock:
    epoch: float = 0.0
    flooding_s: float = 0.0
    stopping: bool = False
    counts: dict[int, int] = field(default_factory=dict)


async def _read_status(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def _connection(
    host: str, port: int, request: bytes, share: float, phase: float,
    active: asyncio.Event, clock: _Clock, opened: asyncio.Event,
) -> None:  # fmt: skip
    # Connection i of k sends at phase i/rate, then every k/rate: together an even stream,
    # not k requests landing at the same instant. Each start begins the schedule afresh.
    reader, writer = await asyncio.open_connection(host, port)
    opened.set()
    n, epoch = 0, -1.0
    while not clock.stopping:
        if not active.is_set():
            await active.wait()
            continue
        if epoch != clock.epoch:
            n, epoch = 0, clock.epoch
        due = phase + n / share
        now = time.perf_counter() - epoch
        if now < due:
            await asyncio.sleep(due - now)  # until this connection's next turn
            continue
        try:
            writer.write(request)
            await writer.drain()
            status = await _read_status(reader)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            # The server closed it while the flood was paused (keep-alive), or an answer
            # was unreadable: a new connection, and the others go on.
            writer.close()
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.1)  # refused: try again on the next turn
            continue
        n += 1
        clock.counts[status] = clock.counts.get(status, 0) + 1
    writer.close()


async def _flood(url: str, key: str, rate: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    request = f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n\r\n".encode()
    clock, active = _Clock(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def start() -> None:
        if not active.is_set():
            clock.epoch = time.perf_counter()
            active.set()

    def pause() -> None:
        if active.is_set():
            clock.flooding_s += time.perf_counter() - clock.epoch
            active.clear()

    def stop() -> None:
        pause()
        clock.stopping = True
        active.set()

    loop.add_signal_handler(signal.SIGUSR1, start)
    loop.add_signal_handler(signal.SIGUSR2, pause)
    loop.add_signal_handler(signal.SIGTERM, stop)
    share = rate / CONNECTIONS
    opened = [asyncio.Event() for _ in range(CONNECTIONS)]
    conns = [
        asyncio.create_task(
            _connection(host, int(port), request, share, i / rate, active, clock, opened[i])
        )
        for i in range(CONNECTIONS)
    ]
    # Ready once every connection is open, so the first start is not a catch-up burst.
    await asyncio.gather(*(e.wait() for e in opened))
    print("ready", flush=True)
    await asyncio.gather(*conns)
    sent = sum(clock.counts.values())
    counts = {str(k): v for k, v in clock.counts.items()}
    rate_sent = sent / clock.flooding_s if clock.flooding_s else 0.0
    print(json.dumps({"sent": sent, "rate": rate_sent, "counts": counts}), flush=True)


class QuietKeyRefused(Exception):
    """The key under its limit was not answered 200 while another key flooded."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"the quiet key got {status}: {body[:300]}")
        self.status = status


@dataclass
class NoisyNeighbour:
    """What the quiet key saw with the flood off and on, and what the flood got."""

    unloaded: list[float]
    loaded: list[float]
    flood: dict[str, Any]
    """{"sent": n, "rate": requests/s while flooding, "counts": {"200": n, "429": n}}"""

    @property
    def p99_ratio(self) -> float:
        return percentile(self.loaded, 99) / percentile(self.unloaded, 99)

    def figures(self) -> dict[str, Any]:
        return {
            "unloaded_p99_ms": round(percentile(self.unloaded, 99) * 1000, 3),
            "loaded_p99_ms": round(percentile(self.loaded, 99) * 1000, 3),
            "unloaded_p50_ms": round(statistics.median(self.unloaded) * 1000, 3),
            "loaded_p50_ms": round(statistics.median(self.loaded) * 1000, 3),
            "p99_ratio": round(self.p99_ratio, 3),
            "samples": len(self.loaded),
            "flood": self.flood,
        }


async def quiet_latencies(url: str, key: str, n: int, interval: float) -> list[float]:
    """`n` requests one after another, `interval` apart; every one must be answered 200."""
    lat: list[float] = []
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            resp = await client.get(PATH, headers={"x-api-key": key})
            lat.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                raise QuietKeyRefused(resp.status_code, resp.text)
            await asyncio.sleep(interval)
    return lat


async def noisy_neighbour(
    url: str, noisy_key: str, quiet_key: str, *, rate: float = 1000.0,
    blocks: int = 8, samples: int = 150, interval: float = 0.02,
) -> NoisyNeighbour:  # fmt: skip
    """The quiet key's latency in interleaved blocks, unloaded then under the flood, so the
    machine's own drift (another job on shared cores) hits both sides alike. The quiet key
    paces itself under the default limit (~40 req/s against 50/s), so any 429 it got would
    be the flood's doing."""
    loader = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jejaring_devtools.flood", url, noisy_key, str(rate),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    unloaded: list[float] = []
    loaded: list[float] = []
    try:
        assert loader.stdout is not None
        ready = await asyncio.wait_for(loader.stdout.readline(), 30)
        if ready != b"ready\n":
            raise RuntimeError(f"the flood did not start: {ready!r}")
        await quiet_latencies(url, quiet_key, 30, interval)  # warm up
        for _ in range(blocks):
            unloaded += await quiet_latencies(url, quiet_key, samples, interval)
            loader.send_signal(signal.SIGUSR1)
            # The flood's first second spends the key's burst (100 let through at once)
            # and the queue it leaves; measure the sustained flood after it.
            await asyncio.sleep(1.5)
            loaded += await quiet_latencies(url, quiet_key, samples, interval)
            loader.send_signal(signal.SIGUSR2)
            await asyncio.sleep(0.5)  # let the last of it drain
    finally:
        with contextlib.suppress(ProcessLookupError):
            loader.terminate()
        try:
            # Each connection ends after its request in flight: bounded, in case a
            # server never answers it.
            out, _ = await asyncio.wait_for(loader.communicate(), 15)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                loader.kill()
            await loader.wait()
            raise
    lines = out.splitlines()
    if not lines:
        raise RuntimeError(f"the flood ended without a report (exit {loader.returncode})")
    report: dict[str, Any] = json.loads(lines[-1])
    return NoisyNeighbour(unloaded, loaded, report)


def main() -> None:
    url, key, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    asyncio.run(_flood(url, key, rate))


if __name__ == "__main__":
    main()
