"""A local Apache Kafka broker (single node, KRaft) for development and tests.

The broker jars come from Maven Central via ``deploy/kafka/pom.xml`` and are cached in
``<cache>/kafka/<version>/libs``; no Kafka distribution or container is needed, only Java
and Maven.

    with KafkaBroker(tmp_path / "kafka") as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from jejaring_devtools import _proc
from jejaring_devtools.paths import cache_dir, free_port, port_in_use, repo_root

DEFAULT_KAFKA_VERSION = "4.4.0"
#: The Kafka version used unless told otherwise (``$JEJARING_KAFKA_VERSION`` overrides).
KAFKA_VERSION: str = os.environ.get("JEJARING_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION

HOST = "127.0.0.1"
NODE_ID = 1
#: Written into the jar folder's parent once ``mvn`` has copied every jar.
MARKER_NAME = "libs.complete.json"

_SERVER_MAIN = "kafka.Kafka"
_STORAGE_MAIN = "kafka.tools.StorageTool"


class KafkaError(RuntimeError):
    """Fetching, formatting, starting or stopping the local broker failed."""


# --------------------------------------------------------------------------- jars


def _deploy_dir() -> Path:
    return repo_root() / "deploy" / "kafka"


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _jars_complete(libs: Path, marker: Path) -> bool:
    if not (marker.is_file() and libs.is_dir()):
        return False
    try:
        info = json.loads(marker.read_text())
        jars: list[str] = info["jars"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not all((libs / jar).is_file() for jar in jars):
        return False
    # Refetch when the pom changed (e.g. another dependency was added).
    try:
        pom = _deploy_dir() / "pom.xml"
        return bool(info.get("pom_sha256") == _pom_digest(pom))
    except (OSError, RuntimeError):
        return True  # no checkout around: trust the cache


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def kafka_home(version: str = KAFKA_VERSION, *, cache: Path | None = None) -> Path:
    """``<cache>/kafka/<version>``: where the jars of ``version`` are (to be) cached."""
    return (cache if cache is not None else cache_dir()) / "kafka" / version


def ensure_kafka_jars(version: str = KAFKA_VERSION, *, cache: Path | None = None) -> Path:
    """Return the folder holding every jar the broker needs, fetching them once.

    Runs ``mvn dependency:copy-dependencies`` against ``deploy/kafka/pom.xml`` only when the
    cache lacks the completion marker, so a warm call costs a couple of stat()s. A file lock
    keeps concurrent callers (parallel test sessions) from fetching at the same time.
    """
    base = kafka_home(version, cache=cache)
    libs = base / "libs"
    marker = base / MARKER_NAME
    if _jars_complete(libs, marker):
        return libs
    with _file_lock(base / ".fetch.lock"):
        if _jars_complete(libs, marker):  # someone else fetched while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaError("Maven (mvn) is not on PATH; install it (apt-get install maven)")
        pom = _deploy_dir() / "pom.xml"
        tmp = base / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
        env = {**os.environ, "KAFKA_VERSION": version}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        jars = sorted(p.name for p in tmp.glob("*.jar")) if tmp.is_dir() else []
        if result.returncode != 0 or f"kafka_2.13-{version}.jar" not in jars:
            shutil.rmtree(tmp, ignore_errors=True)
            output = (result.stdout + result.stderr).strip()
            raise KafkaError(
                f"fetching Kafka {version} jars failed (exit {result.returncode}): "
                f"{shlex.join(cmd)}\n{output[-8000:]}"
            )
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        info = {
            "version": version,
            "jars": jars,
            "pom_sha256": _pom_digest(pom),
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        marker.write_text(json.dumps(info, indent=2) + "\n")
    return libs


# --------------------------------------------------------------------------- config


def new_cluster_id() -> str:
    """A random KRaft cluster id (22-char URL-safe base64 UUID, as Kafka makes them)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return cid


def server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    node_id: int = NODE_ID,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The broker settings: one combined broker+controller node, loopback only."""
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "6",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a kill -9 the restarted broker cannot register until its previous
        # session expires (default 9 s); shorten that so crash tests recover quickly.
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "6000",
        "auto.create.topics.enable": "true",
        # A small machine: fewer threads than the defaults.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
    }
    if extra:
        props.update(extra)
    return props


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render_properties(props: Mapping[str, str]) -> str:
    """Java ``.properties`` text for ``props``."""
    lines = ["# Generated by jejaring-devtools; rewritten on every start."]
    lines += [f"{key}={_escape(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _java() -> str:
    env = os.environ.get("JEJARING_JAVA")
    if env:
        return env
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaError("java is not on PATH; install a JDK/JRE 17+ (apt-get install default-jre)")
    return found


# --------------------------------------------------------------------------- readiness


async def _describe(bootstrap: str, wait: float) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="jejaring-dev-probe",
        request_timeout_ms=int(wait * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), wait)
        info: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), wait)
        return info
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def probe_broker(bootstrap: str, *, node_id: int = NODE_ID, timeout: float = 5.0) -> bool:
    """True when the broker answers a Metadata request and lists itself as a live broker.

    Runs in a helper thread so it also works when called from inside an event loop.
    """
    host, _, port = bootstrap.rpartition(":")
    if not port_in_use(int(port), host):
        return False
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        try:
            info = pool.submit(asyncio.run, _describe(bootstrap, timeout)).result(timeout + 5)
        except Exception:
            return False
    return any(broker.get("node_id") == node_id for broker in info.get("brokers", []))


# --------------------------------------------------------------------------- broker


class KafkaBroker:
    """One single-node KRaft Kafka broker living in ``home``.

    Layout of ``home``: ``server.properties``, ``cluster.id``, ``broker.json`` (ports),
    ``broker.pid``, ``broker.out`` (JVM stdout/stderr), ``logs/server.log`` (log4j) and
    ``data/`` (the Kafka log dir).

    Ports are chosen once per object (free ones when ``None``; a home that was used before
    keeps its ports), so ``stop()`` then ``start()`` comes back on the same address with
    the same data.
    """

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        *,
        version: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.heap = heap
        self.version = version or KAFKA_VERSION
        self.extra_properties = dict(properties or {})
        state = self._read_state()
        self.port: int = port if port is not None else int(state.get("port") or free_port())
        cport = controller_port if controller_port is not None else state.get("controller_port")
        self.controller_port: int = int(cport) if cport else free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # ----------------------------------------------------------------- paths

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        """JVM stdout/stderr."""
        return self.home / "broker.out"

    @property
    def server_log_path(self) -> Path:
        """The broker's own log4j log."""
        return self.home / "logs" / "server.log"

    @property
    def pid_path(self) -> Path:
        return self.home / "broker.pid"

    @property
    def state_path(self) -> Path:
        return self.home / "broker.json"

    @property
    def cluster_id_path(self) -> Path:
        return self.home / "cluster.id"

    def __repr__(self) -> str:
        return f"KafkaBroker(home={str(self.home)!r}, bootstrap={self.bootstrap_servers!r})"

    # ----------------------------------------------------------------- attach

    @classmethod
    def attach(cls, home: Path) -> KafkaBroker:
        """A handle on the broker recorded in ``home`` (e.g. started by another process).

        Raises :class:`KafkaError` if ``home`` has never held a broker.
        """
        home = Path(home).resolve()
        if not (home / "broker.json").is_file():
            raise KafkaError(f"no Kafka broker recorded in {home}")
        return cls(home)

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.home / "broker.json").read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _write_state(self, pid: int | None) -> None:
        state = {
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap_servers": self.bootstrap_servers,
            "version": self.version,
            "pid": pid,
        }
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    @property
    def pid(self) -> int | None:
        """The broker's pid when running (ours or the one in the pid file)."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        pid = _proc.read_pid(self.pid_path)
        if pid is not None and _proc.cmdline_matches(pid, [_SERVER_MAIN, str(self.config_path)]):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid is not None

    def is_ready(self, timeout: float = 5.0) -> bool:
        """True when the broker answers a metadata request."""
        return probe_broker(self.bootstrap_servers, timeout=timeout)

    # ----------------------------------------------------------------- lifecycle

    def _java_command(self, libs: Path, main: str, *args: str) -> list[str]:
        log4j = _deploy_dir() / "log4j2.properties"
        cmd = [
            _java(),
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            f"-Dlog4j2.configurationFile={log4j}",
        ]
        cmd += shlex.split(os.environ.get("JEJARING_KAFKA_JAVA_OPTS", ""))
        cmd += ["-cp", f"{libs}/*", main, *args]
        return cmd

    def write_config(self) -> Path:
        """(Re)write ``server.properties`` for the current ports."""
        self.home.mkdir(parents=True, exist_ok=True)
        props = server_properties(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.data_dir,
            extra=self.extra_properties,
        )
        self.config_path.write_text(render_properties(props))
        return self.config_path

    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def format(self) -> None:
        """Format the KRaft storage once (a no-op when already formatted)."""
        if self.is_formatted():
            return
        libs = ensure_kafka_jars(self.version)
        self.write_config()
        if self.cluster_id_path.is_file():
            cluster_id = self.cluster_id_path.read_text().strip()
        else:
            cluster_id = new_cluster_id()
            self.cluster_id_path.write_text(cluster_id + "\n")
        cmd = self._java_command(
            libs,
            _STORAGE_MAIN,
            "format",
            "--standalone",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self.config_path),
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not self.is_formatted():
            raise KafkaError(
                f"formatting Kafka storage in {self.data_dir} failed "
                f"(exit {result.returncode}):\n{(result.stdout + result.stderr).strip()[-4000:]}"
            )
        self._write_state(pid=None)

    def start(self, timeout: float = 60, *, detach: bool = False) -> None:
        """Start the broker (if not already running) and wait until it answers.

        The JVM runs in its own process group/session. Unless ``detach`` is true, a
        broker started here is killed when this Python process exits.
        """
        if self.is_running():
            self.wait_ready(timeout)
            return
        if port_in_use(self.port):
            raise KafkaError(f"cannot start Kafka: {HOST}:{self.port} is already in use")
        if port_in_use(self.controller_port):
            raise KafkaError(f"cannot start Kafka: {HOST}:{self.controller_port} is in use")
        libs = ensure_kafka_jars(self.version)
        self.format()
        self.write_config()
        cmd = self._java_command(libs, _SERVER_MAIN, str(self.config_path))
        with self.log_path.open("ab") as out:
            out.write(f"\n=== {time.strftime('%F %T')} {shlex.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        self._write_state(pid=self._proc.pid)
        if not detach and not self._atexit_registered:
            atexit.register(self._atexit_kill)
            self._atexit_registered = True
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _atexit_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.kill()

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until the broker answers a metadata request listing itself."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise KafkaError(
                    f"Kafka exited with code {self._proc.returncode} during start-up\n"
                    + self._log_tails()
                )
            if self._proc is None and not self.is_running():
                raise KafkaError(f"no Kafka broker running in {self.home}\n" + self._log_tails())
            remaining = deadline - time.monotonic()
            if probe_broker(self.bootstrap_servers, timeout=max(1.0, min(5.0, remaining))):
                return
            if time.monotonic() >= deadline:
                raise KafkaError(
                    f"Kafka at {self.bootstrap_servers} not ready after {timeout:.0f}s\n"
                    + self._log_tails()
                )
            time.sleep(0.2)

    def _log_tails(self) -> str:
        parts = []
        for path in (self.log_path, self.server_log_path):
            text = _proc.tail(path, 30)
            if text:
                parts.append(f"--- tail of {path}:\n{text}")
        return "\n".join(parts)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self.pid
        if pid is None:
            return True
        _proc.signal_group(pid, sig)
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return _proc.wait_gone(pid, timeout)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the broker's process group (controlled shutdown), SIGKILL after ``timeout``."""
        if not self._signal_and_wait(signal.SIGTERM, timeout):
            self._signal_and_wait(signal.SIGKILL, 10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the broker at once (simulates a crash; data is recovered on next start)."""
        self._signal_and_wait(signal.SIGKILL, 10)
        self._forget()

    def _forget(self) -> None:
        self.pid_path.unlink(missing_ok=True)
        self._proc = None
        if self.state_path.exists():
            self._write_state(pid=None)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
