"""`make bench` keeps working: a quick run writes a well-formed report (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"name", "value", "unit", "reference", "reference_value", "ratio", "goal", "met"}


def test_quick_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--only",
            "backbone",
            "--db",
            "sqlite",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "latest.json").read_text())
    names = {r["name"] for r in results}
    assert {"backbone.relay_throughput", "backbone.outbox_write"} <= names
    for r in results:
        assert set(r) >= FIELDS
        assert r["value"] > 0 and r["reference_value"] > 0
    assert "backbone.relay_throughput" in (tmp_path / "latest.md").read_text()
