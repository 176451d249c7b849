"""A throw-away local PostgreSQL server for development and tests.

Uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/<v>/bin``).
PostgreSQL refuses to run as root, so when we are root the server runs as the ``postgres``
system user (``runuser``) and ``home`` is handed over to it.

    with PostgresServer(tmp_path / "pg") as pg:
        url = pg.create_database("stock")   # postgresql+asyncpg://postgres@127.0.0.1:<port>/stock
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from jejaring_devtools.paths import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """Locating, initialising, starting or talking to the local PostgreSQL failed."""


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_pg_bindir() -> Path:
    """The PostgreSQL server bin dir: ``$JEJARING_PG_BINDIR`` or the newest
    ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``pg_ctl``."""
    env = os.environ.get("JEJARING_PG_BINDIR")
    candidates = (
        [Path(env)]
        if env
        else sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    )
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "psql")):
            return bindir
    where = f"JEJARING_PG_BINDIR={env}" if env else "/usr/lib/postgresql/*/bin"
    raise PostgresError(
        f"PostgreSQL server binaries not found in {where}; install Debian's postgresql "
        "package (apt-get install postgresql) or set JEJARING_PG_BINDIR"
    )


def _run_as_user() -> str | None:
    """The account the server must run as (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("JEJARING_PG_USER", SUPERUSER)


class PostgresServer:
    """One PostgreSQL cluster in ``home`` (``data/``, ``postgres.log``, the unix socket).

    ``port=None`` picks a free port the first time and keeps it for this ``home``.
    """

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = Path(home).resolve()
        state = self._read_state()
        self.port: int = port if port is not None else int(state.get("port") or free_port())
        self._bindir: Path | None = None

    # ----------------------------------------------------------------- paths

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_pg_bindir()
        return self._bindir

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    @property
    def state_path(self) -> Path:
        return self.home / "postgres.json"

    def __repr__(self) -> str:
        return f"PostgresServer(home={str(self.home)!r}, port={self.port})"

    def url(self, name: str, driver: str = "asyncpg") -> str:
        """SQLAlchemy URL of database ``name`` (async driver by default)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}@{HOST}:{self.port}/{name}"

    def dsn(self, name: str) -> str:
        """libpq/asyncpg DSN of database ``name``."""
        return self.url(name, driver="")

    # ----------------------------------------------------------------- helpers

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.home / "postgres.json").read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _tool(self, name: str) -> str:
        return str(self.bindir / name)

    def _run(
        self, cmd: list[str], *, as_server_user: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        user = _run_as_user() if as_server_user else None
        if user is not None:
            cmd = ["runuser", "-u", user, "--", *cmd]
        return subprocess.run(
            cmd,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        user = _run_as_user()
        if user is None:
            return
        pw = pwd.getpwnam(user)
        os.chown(self.home, pw.pw_uid, pw.pw_gid)
        if self.log_path.exists():
            os.chown(self.log_path, pw.pw_uid, pw.pw_gid)
        # The server user must be able to reach home: add o+x (traverse, not list) to
        # any parent lacking it, e.g. pytest's 0700 tmp folders.
        for parent in self.home.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def init(self) -> None:
        """``initdb`` once (a no-op when the cluster exists)."""
        self._prepare_home()
        if self.is_initialized():
            return
        result = self._run(
            [
                self._tool("initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise PostgresError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def _server_options(self) -> str:
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.home),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        return " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())

    # ----------------------------------------------------------------- lifecycle

    def is_running(self) -> bool:
        if not self.is_initialized():
            return False
        result = self._run([self._tool("pg_ctl"), "status", "-D", str(self.data_dir)])
        return result.returncode == 0

    def is_ready(self) -> bool:
        result = self._run(
            [self._tool("pg_isready"), "-q", "-h", HOST, "-p", str(self.port), "-t", "2"],
            as_server_user=False,
        )
        return result.returncode == 0

    def start(self, timeout: float = 60) -> None:
        """initdb if needed, start the server (detached) and wait until it accepts connections."""
        self.init()
        if not self.is_running():
            self.state_path.write_text(json.dumps({"port": self.port}) + "\n")
            result = self._run(
                [
                    self._tool("pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-o",
                    self._server_options(),
                ],
                timeout=timeout + 10,
            )
            if result.returncode != 0:
                raise PostgresError(
                    f"pg_ctl start failed (exit {result.returncode}):\n"
                    f"{result.stdout}{result.stderr}\n--- tail of {self.log_path}:\n"
                    + self._log_tail()
                )
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() >= deadline:
                raise PostgresError(
                    f"PostgreSQL on {HOST}:{self.port} not ready after {timeout:.0f}s\n"
                    + self._log_tail()
                )
            time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (a no-op when not running)."""
        if not self.is_running():
            return
        result = self._run(
            [
                self._tool("pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0 and self.is_running():
            raise PostgresError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")

    # ----------------------------------------------------------------- SQL

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser; return unaligned tuples-only output."""
        cmd = [
            self._tool("psql"),
            "-X",
            "-q",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-c",
            sql,
        ]
        result = self._run(cmd, as_server_user=False)
        if result.returncode != 0:
            raise PostgresError(f"psql failed: {sql!r}\n{result.stderr.strip()}")
        return result.stdout.strip()

    @staticmethod
    def _check_name(name: str) -> None:
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r} (letters, digits, _; max 63)")

    def database_exists(self, name: str) -> bool:
        self._check_name(name)
        # name is validated against _DB_NAME above, so inlining it is safe.
        sql = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"  # noqa: S608
        return self.psql(sql) == "1"

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; return its SQLAlchemy async URL."""
        self._check_name(name)
        if not self.database_exists(name):
            try:
                self.psql(f'CREATE DATABASE "{name}"')
            except PostgresError as exc:
                if "already exists" not in str(exc):
                    raise
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (if it exists), disconnecting its sessions."""
        self._check_name(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

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
