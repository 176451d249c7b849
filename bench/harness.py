"""What the runner hands to benchmarks (Context) and what they hand back (Result)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from jejaring_devtools.kafka import KafkaBroker
from jejaring_devtools.paths import free_port
from jejaring_devtools.postgres import PostgresServer
from jejaring_devtools.uvicorn_proc import spawn_uvicorn, wait_healthy
from jejaring_shared.settings import KafkaSettings

DbKind = Literal["sqlite", "postgresql"]
REPEATS = 3
"""Every timed part runs this many times (after one warm-up); results are medians."""


@dataclass
class Result:
    """One measured figure, next to the reference it is judged against."""

    name: str
    value: float | None
    """None when the measurement failed (its `error` says why)."""
    unit: str
    reference: str | None = None
    reference_value: float | None = None
    ratio: float | None = None
    goal: str | None = None
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Flattened into the JSON object (db, n, samples, ...)."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}


@dataclass
class Context:
    broker: KafkaBroker
    workdir: Path
    dbs: tuple[DbKind, ...]
    quick: bool
    pg: PostgresServer | None = None
    status: Callable[[str], None] = lambda _msg: None
    """Benchmarks report what they are doing through this (shown in the progress bar)."""

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def kafka_version(self) -> str:
        return self.broker.version

    def kafka_settings(self, **overrides: Any) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers, **overrides)

    async def database_url(self, kind: DbKind, label: str = "bench") -> str:
        """A fresh, empty database of `kind`: a new SQLite file or a new PostgreSQL database."""
        name = f"{label}_{uuid.uuid4().hex[:8]}"
        if kind == "sqlite":
            return f"sqlite+aiosqlite:///{self.workdir / 'sqlite' / name}.db"
        if self.pg is None:
            raise RuntimeError("PostgreSQL was not started for this run (--db sqlite?)")
        return await asyncio.to_thread(self.pg.create_database, name)


def median(samples: list[float]) -> float:
    return float(statistics.median(samples))


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    """Seconds `fn()` took, by time.perf_counter."""
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def spawn_service(
    target: str, env: dict[str, str], workdir: Path, name: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start an app factory as its own uvicorn process, as `make run` does, on a free port;
    returns once it answers /healthz. Its log is `workdir/<name>.log`."""
    port = free_port()
    log = workdir / f"{name}.log"
    proc = spawn_uvicorn(target, port, env, workdir, log, log_level="warning")
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log)
    except BaseException:
        stop_services([proc])
        raise
    return proc, port


def stop_services(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group (a clean shutdown), SIGKILL what has not left in 15 s."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it may have just exited
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a content-length (what the services
    send), for the benchmarks' plain asyncio clients: httpx would be the bottleneck."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("the server closed the connection")
    status = int(line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)
