"""Run the benchmarks: `python -m bench.run [--only NAME] [--quick] [--db sqlite|postgresql|both]`.

Discovers bench/bench_*.py (each with `async def run(ctx) -> list[Result]`), starts one
private Kafka broker (and a private PostgreSQL server when asked for) in a temporary folder,
runs them, prints a table and writes <out>/latest.json and <out>/latest.md.

Exit code: 0 when every benchmark ran, whether or not its goals were met (the table says);
1 when a benchmark crashed; 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import pkgutil
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench.harness import REPEATS, Context, DbKind, Result

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"
console = Console()

BenchFn = Callable[[Context], Awaitable[list[Result]]]


@dataclass
class Outcome:
    results: list[Result] = field(default_factory=list)
    crashed: dict[str, str] = field(default_factory=dict)
    """Benchmark module -> traceback."""


# --------------------------------------------------------------------------- discovery


def discover(only: str | None) -> dict[str, BenchFn]:
    found: dict[str, BenchFn] = {}
    for info in sorted(pkgutil.iter_modules([str(BENCH_DIR)]), key=lambda i: i.name):
        if not info.name.startswith("bench_"):
            continue
        short = info.name.removeprefix("bench_")
        if only and only not in short and only not in info.name:
            continue
        module = importlib.import_module(f"bench.{info.name}")
        fn = getattr(module, "run", None)
        if fn is None or not inspect.iscoroutinefunction(fn):
            raise SystemExit(f"bench/{info.name}.py has no `async def run(ctx)`")
        found[short] = cast(BenchFn, fn)
    return found


def postgres_available() -> bool:
    from jejaring_devtools.postgres import PostgresError, find_pg_bindir

    try:
        find_pg_bindir()
    except PostgresError:
        return False
    return True


def resolve_dbs(choice: str | None) -> tuple[DbKind, ...]:
    if choice is None:
        return ("postgresql",) if postgres_available() else ("sqlite",)
    if choice == "both":
        return ("sqlite", "postgresql")
    return (cast(DbKind, choice),)


# --------------------------------------------------------------------------- running


async def run_all(benches: dict[str, BenchFn], ctx: Context, progress: Progress) -> Outcome:
    outcome = Outcome()
    overall = progress.add_task("benchmarks", total=len(benches))
    step = progress.add_task("", total=None)
    ctx.status = lambda msg: progress.update(step, description=f"  {msg}")
    for name, fn in benches.items():
        progress.update(overall, description=f"[bold]{name}")
        try:
            results = await fn(ctx)
        except Exception:
            outcome.crashed[name] = traceback.format_exc()
            progress.console.print(f"[red]benchmark {name} crashed[/red]")
            progress.console.print(outcome.crashed[name], markup=False, highlight=False)
        else:
            outcome.results.extend(results)
            for r in results:
                progress.console.print(f"  {_one_line(r)}", markup=False, highlight=False)
        progress.advance(overall)
    progress.update(step, description="  done", visible=False)
    return outcome


def _one_line(r: Result) -> str:
    db = r.extra.get("db")
    where = f" [{db}]" if db else ""
    line = f"{r.name}{where}: {_fmt(r.value)} {r.unit}"
    if r.reference_value is not None:
        line += f" vs {_fmt(r.reference_value)} ({r.reference})"
    if r.ratio is not None:
        line += f" = {r.ratio:.2f}x"
    if r.met is not None:
        line += " goal met" if r.met else f" goal NOT met ({r.goal})"
    return line


# --------------------------------------------------------------------------- reporting


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


COLUMNS = (
    "name",
    "db",
    "n",
    "value",
    "unit",
    "reference",
    "reference value",
    "ratio",
    "goal",
    "met",
)


def _row(r: Result) -> list[str]:
    met = "" if r.met is None else ("yes" if r.met else "**NO**")
    return [
        r.name,
        str(r.extra.get("db", "")),
        f"{r.extra['n']:,}" if isinstance(r.extra.get("n"), int) else "",
        _fmt(r.value),
        r.unit,
        r.reference or "",
        _fmt(r.reference_value),
        "" if r.ratio is None else f"{r.ratio:.2f}x",
        r.goal or "",
        met,
    ]


def machine_info() -> dict[str, Any]:
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count() or 0
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": ncpu,
        "cpu": model or "unknown",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def render_markdown(outcome: Outcome, header: dict[str, Any]) -> str:
    m = header["machine"]
    lines = [
        "# Jejaring benchmarks",
        "",
        f"- date: {header['date']}",
        f"- machine: nproc {m['nproc']}, {m['cpu']}, {m['platform']}",
        f"- python {m['python']}, aiokafka {header['aiokafka']}, SQLAlchemy {header['sqlalchemy']}",
        f"- Kafka {header['kafka']} (private single-node KRaft broker, started for this run)",
        f"- databases: {', '.join(header['dbs'])}; quick: {header['quick']}; "
        f"command: `{header['command']}`",
        f"- every timed part ran {REPEATS} times after one warm-up; values are the medians "
        "(per-run samples are in latest.json)",
        f"- total wall time: {header['elapsed_s']:.0f} s",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in outcome.results]
    notes = [(r, r.extra["note"]) for r in outcome.results if r.extra.get("note")]
    if notes:
        lines += ["", "Notes:", ""]
        seen: set[str] = set()
        for r, note in notes:
            if note not in seen:
                seen.add(note)
                lines.append(f"- {r.name}: {note}")
    missed = [r for r in outcome.results if r.met is False]
    lines.append("")
    if missed:
        lines.append(
            "**Goals not met:** "
            + "; ".join(f"{r.name} [{r.extra.get('db', '')}] ({r.goal})" for r in missed)
        )
    else:
        lines.append("All stated goals met.")
    if outcome.crashed:
        lines += ["", "## Crashed", ""]
        for name, tb in outcome.crashed.items():
            lines += [f"### {name}", "", "```", tb.rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def print_table(outcome: Outcome) -> None:
    table = Table(title=f"Jejaring benchmarks (medians of {REPEATS} runs)")
    for col in COLUMNS:
        table.add_column(
            col,
            justify="right" if col in {"n", "value", "reference value", "ratio"} else "left",
            no_wrap=col in {"name", "db", "n", "value", "reference value", "ratio", "met"},
        )
    for r in outcome.results:
        row = _row(r)
        row[-1] = {"yes": "[green]yes[/green]", "**NO**": "[red]NO[/red]"}.get(row[-1], row[-1])
        table.add_row(*row)
    # A pipe or a CI log gets 80 columns from rich; the table needs more to stay readable.
    wide = console if console.is_terminal else Console(width=max(console.width, 170))
    wide.print(table)


def write_outputs(outcome: Outcome, out: Path, header: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = [r.to_json() for r in outcome.results]
    (out / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "latest.md").write_text(render_markdown(outcome, header))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", metavar="NAME", help="run only benchmarks whose name contains NAME"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgresql", "both"),
        default=None,
        help="database(s) to run on (default: postgresql when its server binaries exist, "
        "else sqlite)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    benches = discover(args.only)
    if not benches:
        console.print(f"[red]no benchmark matches {args.only!r}[/red]")
        return 2
    dbs = resolve_dbs(args.db)
    if "postgresql" in dbs and not postgres_available():
        console.print("[red]PostgreSQL server binaries not found; use --db sqlite[/red]")
        return 2

    from jejaring_devtools.kafka import KafkaBroker
    from jejaring_devtools.postgres import PostgresServer

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="jejaring-bench-"))
    broker = KafkaBroker(workdir / "kafka")
    pg: PostgresServer | None = None
    outcome = Outcome()
    try:
        with console.status("starting a private Kafka broker"):
            broker.start()
        if "postgresql" in dbs:
            with console.status("starting a private PostgreSQL server"):
                pg = PostgresServer(workdir / "postgres")
                pg.start()
        ctx = Context(broker=broker, workdir=workdir, dbs=dbs, quick=args.quick, pg=pg)
        console.print(
            f"Kafka {broker.version} at {broker.bootstrap_servers}; databases: {', '.join(dbs)}"
            f"{'; quick' if args.quick else ''}; benchmarks: {', '.join(benches)}"
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            outcome = asyncio.run(run_all(benches, ctx, progress))
    finally:
        with console.status("stopping the broker and database"):
            if pg is not None:
                try:
                    pg.stop()
                except Exception as exc:
                    console.print(f"[yellow]could not stop PostgreSQL: {exc}[/yellow]")
            broker.stop()
        if args.keep:
            console.print(f"temporary folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    header = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine_info(),
        "kafka": broker.version,
        "aiokafka": _version("aiokafka"),
        "sqlalchemy": _version("sqlalchemy"),
        "dbs": list(dbs),
        "quick": args.quick,
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "elapsed_s": time.perf_counter() - started,
    }
    write_outputs(outcome, args.out, header)
    print_table(outcome)
    missed = [r for r in outcome.results if r.met is False]
    if missed:
        console.print(
            f"[yellow]{len(missed)} goal(s) not met[/yellow] (see {args.out / 'latest.md'})"
        )
    if outcome.crashed:
        console.print(f"[red]crashed: {', '.join(outcome.crashed)}[/red]")
        return 1
    console.print(f"results: {args.out / 'latest.json'}, {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
