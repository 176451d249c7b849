"""The probe service's consumer as a separate process, for crash and group tests.

python -m support.probe_proc --db URL --bootstrap HOST:PORT --name A [--kill-after-commits N]

Prints `assigned <n>` whenever its partition assignment changes, `handled <json>` whenever
its counts of handled messages change (so a test can wait for what it was redelivered), and
on SIGTERM shuts down gracefully and prints `stats <json>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal

from asgi_lifespan import LifespanManager

from jejaring_shared.app import create_service_app

from . import probe


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default=probe.PROBE_TOPIC)
    ap.add_argument("--name", default="p")
    ap.add_argument("--kill-after-commits", type=int, default=0)
    args = ap.parse_args()

    commits = 0

    def after_db_commit(_envelope: object) -> None:
        nonlocal commits
        commits += 1
        if args.kill_after_commits and commits >= args.kill_after_commits:
            # The database has the effect; the offset is not committed yet.
            print(f"killing after {commits} commits", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    app = create_service_app(
        probe.definition(topic=args.topic, applied_by=args.name, after_db_commit=after_db_commit),
        probe.settings(args.db, args.bootstrap),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        runner = app.state.runtime.consumers[0]

        def counts() -> dict[str, float]:
            return {
                s.labels["outcome"]: s.value
                for m in app.state.runtime.metrics.handled.collect()
                for s in m.samples
                if s.name.endswith("_total")
            }

        last = -1
        handled: dict[str, float] = {}
        print("started", flush=True)
        while not stop.is_set():
            if len(runner.assigned) != last:
                last = len(runner.assigned)
                print(f"assigned {last}", flush=True)
            now = counts()
            if now != handled:
                handled = now
                print("handled " + json.dumps(handled), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
        handled = counts()
    print("stats " + json.dumps({"handled": handled, "commits": commits}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
