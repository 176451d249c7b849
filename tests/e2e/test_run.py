"""`make run` end to end: the same command brings up Kafka, every service and the gateway."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import httpx

from jejaring_devtools.paths import free_port

CLI = [sys.executable, "-m", "jejaring_devtools.cli"]


def _base_port() -> int:
    """Five consecutive free ports (gateway + four services), below the kernel's range of
    ephemeral ports: the services bind last, after Kafka and their own outgoing connections
    have taken ephemeral ports, and one of those once took a port picked from that range."""
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ports.read_text().split()[0]) if ports.exists() else 32768
    top = min(low, 32768) - 5
    while True:
        base = random.randrange(10000, top)
        if all(_free(base + i) for i in range(5)):
            return base


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_run_brings_everything_up_ready(tmp_path: Path) -> None:
    base, kafka = _base_port(), free_port()
    args = ["--data", str(tmp_path), "--base-port", str(base), "--kafka-port", str(kafka)]
    started = subprocess.run(
        [*CLI, "run", "--detach", *args], capture_output=True, text=True, timeout=180
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{base}/readyz" in started.stdout
        for offset, name in enumerate(["gateway", "catalog", "stock", "transfer", "supplier"]):
            resp = httpx.get(f"http://127.0.0.1:{base + offset}/readyz", timeout=10)
            assert resp.status_code == 200, (name, resp.text)
            assert resp.json()["status"] == "ready"
        gateway = httpx.get(f"http://127.0.0.1:{base}/readyz", timeout=10).json()
        assert set(gateway["services"]) == {"catalog", "stock", "transfer", "supplier"}
        status = subprocess.run([*CLI, "status", *args], capture_output=True, text=True)
        assert status.returncode == 0, status.stdout
    finally:
        stopped = subprocess.run([*CLI, "stop", *args], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    status = subprocess.run([*CLI, "status", *args], capture_output=True, text=True)
    assert status.returncode == 1
