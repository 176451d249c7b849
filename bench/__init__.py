"""Benchmarks of the Jejaring backbone: `python -m bench.run` (see bench/run.py).

The probe service and its migrations live in tests/support; putting tests/ on sys.path
here lets every benchmark reuse them, so the schema is defined once.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
