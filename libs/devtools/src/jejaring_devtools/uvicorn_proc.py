"""Run one ASGI app factory as a uvicorn process, as `make run` does (shared by the stack,
the benchmarks and the process-level tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from ._proc import tail


def uvicorn_command(target: str, port: int, *, log_level: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", target, "--factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    # The gateway is the edge here: X-Forwarded-For from a local client is not to be
    # believed (uvicorn trusts it from 127.0.0.1 by default), or one address could pose as
    # many to the gateway's unknown-key limiter. Behind a real proxy, run uvicorn with
    # --proxy-headers --forwarded-allow-ips=<the proxy>.
    cmd += ["--no-proxy-headers"]
    if log_level is not None:
        cmd += ["--log-level", log_level]
    return cmd


def spawn_uvicorn(
    target: str,
    port: int,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    *,
    log_level: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start the app in its own session (so a signal to its group reaches its children),
    its output appended to `log_path`. `env` is added to this process's environment."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            uvicorn_command(target, port, log_level=log_level),
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )


def wait_healthy(
    proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60.0
) -> None:
    """Poll `<url>/healthz` until it answers 200; fail with the log's tail if the process
    exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited ({proc.returncode}):\n{tail(log_path)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer /healthz within {timeout:.0f}s:\n{tail(log_path)}")
