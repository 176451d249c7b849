"""`python -m demo run`: the seeded network run three ways against the real services."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import report
from .runner import run_demo, steps

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@app.callback()
def main() -> None:
    """Jejaring demo."""


@app.command()
def run(
    seed: Annotated[int, typer.Option(help="seed of the network, demand and deliveries")] = 7,
    days: Annotated[int, typer.Option(min=1, max=120, help="simulated days")] = 30,
    outlets: Annotated[int, typer.Option(min=2, max=500)] = 50,
    skus: Annotated[int, typer.Option(min=4, max=2000)] = 200,
    out: Annotated[Path, typer.Option(help="where latest.json, latest.md, chart.svg go")] = (
        DEFAULT_OUT
    ),
    only: Annotated[str, typer.Option(help="scenarios to run (a, b, c)")] = "abc",
) -> None:
    """Run (a) no balancing, (b) reactive matching, (c) reactive + weekly rebalancing."""
    keys = [k for k in "abc" if k in only]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("starting", total=steps(days, len(keys)))

        def progress(message: str, advance: float) -> None:
            bar.update(task, description=message, advance=advance)
            if not console.is_terminal:  # a log gets a line per step instead of a live bar
                done = int(bar.tasks[0].completed)
                console.print(f"[{done}/{bar.tasks[0].total:.0f}] {message}", highlight=False)

        demo = asyncio.run(
            run_demo(
                seed=seed,
                days=days,
                outlets=outlets,
                skus=skus,
                out=out,
                only=keys,
                progress=progress,
                command=" ".join(["python -m demo", *sys.argv[1:]]),
            )
        )
    report.print_table(demo.results, demo.summary, console)
    console.print(f"written: {out / 'latest.json'}, {out / 'latest.md'}, {out / 'chart.svg'}")


if __name__ == "__main__":
    app()
