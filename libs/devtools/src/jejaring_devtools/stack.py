"""The whole system on one machine: Kafka, every service and the gateway.

`jejaring-dev run` (and so `make run`) uses it, and so does the end-to-end test, so what
the test proves is what a developer starts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ._proc import cmdline_matches, read_pid, signal_group, tail, wait_gone
from .kafka import KafkaBroker
from .paths import port_in_use
from .postgres import PostgresServer
from .uvicorn_proc import spawn_uvicorn


@dataclass(frozen=True)
class Service:
    name: str
    target: str
    port_offset: int

    @property
    def env_prefix(self) -> str:
        return f"JEJARING_{self.name.upper()}_"


SERVICES = (
    Service("catalog", "jejaring_catalog.entrypoints.app:create_app", 1),
    Service("stock", "jejaring_stock.entrypoints.app:create_app", 2),
    Service("transfer", "jejaring_transfer.entrypoints.app:create_app", 3),
    Service("supplier", "jejaring_supplier.entrypoints.app:create_app", 4),
)
GATEWAY = Service("gateway", "jejaring_gateway.entrypoints.app:create_app", 0)


class StackError(RuntimeError):
    pass


class Stack:
    """Processes live in their own sessions; pid files in <data>/run let `stop` find them."""

    def __init__(
        self,
        data: Path,
        *,
        kafka_port: int = 9092,
        base_port: int = 8100,
        database: str = "sqlite",
        pg_port: int = 55432,
    ) -> None:
        if database not in ("sqlite", "postgresql"):
            raise StackError(f"database must be sqlite or postgresql, not {database!r}")
        self.data = data.resolve()
        self.base_port = base_port
        self.database = database
        self.broker = KafkaBroker(self.data / "kafka", port=kafka_port)
        self.postgres = PostgresServer(self.data / "postgres", port=pg_port)
        self.run_dir = self.data / "run"
        self.log_dir = self.data / "logs"

    def url(self, service: Service) -> str:
        return f"http://127.0.0.1:{self.base_port + service.port_offset}"

    def _database_url(self, service: Service) -> str:
        if self.database == "postgresql":
            return self.postgres.create_database(f"jejaring_{service.name}")
        return f"sqlite+aiosqlite:///{self.data / 'db' / service.name}.db"

    def internal_token(self) -> str:
        """The credential the gateway shows the services: random per data folder, kept in
        <data>/run/internal-token so `stop` and restarts use the same one."""
        path = self.run_dir / "internal-token"
        if path.exists():
            token = path.read_text().strip()
            if token:
                return token
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(token)
        return token

    def gateway_database_url(self) -> str:
        if self.database == "postgresql":
            return self.postgres.create_database("jejaring_gateway")
        return f"sqlite+aiosqlite:///{self.data / 'db' / 'gateway'}.db"

    def _env(self, service: Service) -> dict[str, str]:
        env = dict(os.environ)
        env["JEJARING_KAFKA_BOOTSTRAP_SERVERS"] = self.broker.bootstrap_servers
        env["JEJARING_INTERNAL_TOKEN"] = self.internal_token()
        if service is GATEWAY:
            for s in SERVICES:
                env[f"JEJARING_GATEWAY_{s.name.upper()}_URL"] = self.url(s)
            env["JEJARING_GATEWAY_DATABASE_URL"] = self.gateway_database_url()
        else:
            env[f"{service.env_prefix}DATABASE_URL"] = self._database_url(service)
        return env

    def _pid(self, service: Service) -> int | None:
        """The service's pid if it is running; a reused pid of another program is not it."""
        pid = read_pid(self.run_dir / f"{service.name}.pid")
        if pid is not None and cmdline_matches(pid, ["uvicorn", service.target]):
            return pid
        return None

    def _spawn(self, service: Service) -> None:
        pid_file = self.run_dir / f"{service.name}.pid"
        if self._pid(service) is not None:
            return  # already running
        proc = spawn_uvicorn(
            service.target,
            self.base_port + service.port_offset,
            self._env(service),
            self.data,
            self.log_dir / f"{service.name}.log",
        )
        pid_file.write_text(str(proc.pid))

    def start(self, timeout: float = 120) -> None:
        # Before anything starts: a port another program holds (another checkout's stack,
        # say) would answer our readiness checks, and ours would fail to bind unseen.
        for service in (*SERVICES, GATEWAY):
            port = self.base_port + service.port_offset
            if self._pid(service) is None and port_in_use(port):
                raise StackError(
                    f"port {port} ({service.name}) is in use by another program: stop it, "
                    "or start on other ports (run --base-port N)"
                )
        # Only you may read the data: the databases hold webhook secrets and API keys.
        # (A folder given with --data that is someone else's keeps its mode.)
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.data.stat().st_uid == os.getuid():
            self.data.chmod(0o700)
        for d in (self.run_dir, self.log_dir, self.data / "db"):
            d.mkdir(parents=True, exist_ok=True)
        self.broker.start(detach=True)
        if self.database == "postgresql":
            self.postgres.start()
        for service in (*SERVICES, GATEWAY):
            self._spawn(service)
        self.wait_ready(timeout)

    def keys(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the gateway's key tool (`jejaring-keys ARGS`) on this stack's gateway database."""
        env = dict(os.environ)
        env["JEJARING_GATEWAY_DATABASE_URL"] = self.gateway_database_url()
        (self.data / "db").mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            [sys.executable, "-m", "jejaring_gateway.entrypoints.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def admin_key(self) -> str:
        """The dev admin key: issued on the first `run` (kept in <data>/run/admin-key, only
        readable by you), issued again when it was revoked."""
        path = self.run_dir / "admin-key"
        if path.exists():
            key = path.read_text().strip()
            listed = json.loads(self.keys("list", "--json").stdout or "[]")
            if any(key.startswith(f"jk_{k['key_id']}_") for k in listed):
                return key
        issued = json.loads(
            self.keys("issue", "--role", "admin", "--label", "make run (dev)", "--json").stdout
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(str(issued["key"]))
        return str(issued["key"])

    def readiness(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for service in (*SERVICES, GATEWAY):
            try:
                resp = httpx.get(f"{self.url(service)}/readyz", timeout=5.0)
                out[service.name] = str(resp.json().get("status"))
            except (httpx.HTTPError, ValueError) as exc:
                out[service.name] = f"down ({type(exc).__name__})"
        return out

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state: dict[str, str] = {}
        while time.monotonic() < deadline:
            # Ours must be alive before their ports' answers count.
            for service in self.exited():
                raise StackError(
                    f"{service.name} exited; its log:\n"
                    + tail(self.log_dir / f"{service.name}.log")
                )
            state = self.readiness()
            if all(v == "ready" for v in state.values()):
                return
            time.sleep(0.5)
        raise StackError(f"not ready after {timeout:.0f}s: {state}")

    def exited(self) -> list[Service]:
        """The services (and gateway) of this stack whose process is not running."""
        return [s for s in (*SERVICES, GATEWAY) if self._pid(s) is None]

    def stop(self, timeout: float = 30) -> None:
        # 30 s: a service's own shutdown is bounded at about 25 s with the broker gone.
        # All are told at once and waited for together (one after another, five of them
        # could take minutes).
        running: list[tuple[Service, int]] = []
        for service in (GATEWAY, *SERVICES):
            pid = self._pid(service)
            if pid is not None:
                signal_group(pid, signal.SIGTERM)
                running.append((service, pid))
        deadline = time.monotonic() + timeout
        for _service, pid in running:
            if not wait_gone(pid, max(deadline - time.monotonic(), 0.0)):
                signal_group(pid, signal.SIGKILL)
                wait_gone(pid, 5)
        for service in (GATEWAY, *SERVICES):
            (self.run_dir / f"{service.name}.pid").unlink(missing_ok=True)
        if self.broker.is_running():
            self.broker.stop()
        if self.postgres.is_running():
            self.postgres.stop()
