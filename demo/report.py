"""The demo's output: a rich table, latest.json, latest.md and a self-contained SVG chart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from rich.console import Console
from rich.table import Table

from .sim import ScenarioResult

COLOURS = {"a": "#c0392b", "b": "#e67e22", "c": "#27ae60"}
TARGET_REDUCTION = 0.5


@dataclass
class Summary:
    """The headline: (c) against (a) and (b), measured in the same run."""

    reduction_vs_a: float | None  # 1 - c / a
    reduction_b_vs_a: float | None
    c_below_b: bool | None
    met: bool | None


def summarise(results: dict[str, ScenarioResult]) -> Summary:
    a, b, c = results.get("a"), results.get("b"), results.get("c")

    def cut(x: ScenarioResult | None) -> float | None:
        if a is None or x is None or a.stockout_outlet_days == 0:
            return None
        return 1.0 - x.stockout_outlet_days / a.stockout_outlet_days

    red_c, red_b = cut(c), cut(b)
    below = None if b is None or c is None else c.stockout_outlet_days < b.stockout_outlet_days
    met = None
    if red_c is not None and below is not None:
        met = red_c >= TARGET_REDUCTION and below
    return Summary(red_c, red_b, below, met)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


ROWS: tuple[tuple[str, str], ...] = (
    ("stockout outlet-days", "stockout_outlet_days"),
    ("  share of outlet-sku-days", "stockout_share"),
    ("fill rate (sold / demanded)", "fill_rate"),
    ("units moved (received via transfers)", "units_moved"),
    ("  from peer outlets / suppliers", "split"),
    ("transfer cost (Rp, transport + price)", "transfer_cost"),
    ("restock requests / legs received", "requests"),
    ("rebalancing plans", "plans"),
)


def cells(r: ScenarioResult) -> dict[str, str]:
    share = r.stockout_outlet_days / r.outlet_sku_days if r.outlet_sku_days else 0.0
    plans = "-"
    if r.rebalancing == "unavailable":
        plans = "API missing"
    elif r.rebalancing == "used":
        units = sum(int((p.get("totals") or {}).get("units", 0)) for p in r.plans)
        plans = f"{len(r.plans)} ({units:,} units planned)"
    return {
        "stockout_outlet_days": f"{r.stockout_outlet_days:,}",
        "stockout_share": f"{share * 100:.2f}%",
        "fill_rate": f"{r.fill_rate * 100:.2f}%",
        "units_moved": f"{r.units_moved:,}",
        "split": f"{r.units_from_peers:,} / {r.units_from_suppliers:,}",
        "transfer_cost": f"{r.transfer_cost:,}",
        "requests": f"{r.requests:,} / {r.legs_received:,}",
        "plans": plans,
    }


def print_table(results: dict[str, ScenarioResult], summary: Summary, console: Console) -> None:
    table = Table(title="Jejaring demo: the same network, demand and deliveries, three ways")
    table.add_column("metric")
    for r in results.values():
        table.add_column(f"({r.key}) {r.title}", justify="right")
    by_key = {k: cells(r) for k, r in results.items()}
    for label, key in ROWS:
        table.add_row(label, *(by_key[k][key] for k in results))
    console.print(table)
    verdict = {True: "[green]met[/green]", False: "[red]NOT met[/red]", None: "n/a"}[summary.met]
    console.print(
        f"stockout outlet-days, (c) vs (a): {_pct(summary.reduction_vs_a)} fewer; "
        f"(b) vs (a): {_pct(summary.reduction_b_vs_a)} fewer; (c) below (b): "
        f"{summary.c_below_b}. Goal (>= 50% fewer than (a) and fewer than (b)): {verdict}"
    )


def to_json(
    config: dict[str, Any], results: dict[str, ScenarioResult], summary: Summary
) -> dict[str, Any]:
    return {
        "config": config,
        "scenarios": {k: r.to_json() for k, r in results.items()},
        "summary": {
            "stockout_reduction_c_vs_a": summary.reduction_vs_a,
            "stockout_reduction_b_vs_a": summary.reduction_b_vs_a,
            "c_below_b": summary.c_below_b,
            "goal": ">= 50% fewer stockout outlet-days in (c) than (a), and fewer than (b)",
            "met": summary.met,
        },
    }


def to_markdown(
    config: dict[str, Any], results: dict[str, ScenarioResult], summary: Summary
) -> str:
    head = ["metric", *(f"({r.key}) {r.title}" for r in results.values())]
    lines = [
        "# Jejaring demo",
        "",
        f"- command: `{config['command']}`",
        f"- seed {config['seed']}: {config['outlets']} outlets, {config['skus']} skus "
        f"({config['levels']:,} outlet-sku levels), {config['days']} days, "
        f"{config['suppliers']} community suppliers",
        "- inventory entering the network in every scenario: "
        + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in config["inventory_in"].items())
        + f" units; demand {config['demand_units']:,} units",
        f"- date: {config['date']}; wall time {config['wall_s']:.0f} s",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    by_key = {k: cells(r) for k, r in results.items()}
    for label, key in ROWS:
        lines.append("| " + " | ".join([label.strip(), *(by_key[k][key] for k in results)]) + " |")
    lines += [
        "",
        f"Stockout outlet-days, (c) vs (a): **{_pct(summary.reduction_vs_a)} fewer**; "
        f"(b) vs (a): {_pct(summary.reduction_b_vs_a)} fewer; (c) below (b): "
        f"{summary.c_below_b}.",
        f"Goal (>= 50% fewer than (a) and fewer than (b)): "
        f"**{ {True: 'met', False: 'NOT met', None: 'n/a'}[summary.met] }**.",
        "",
        "![stockouts per day](chart.svg)",
        "",
    ]
    errors = {k: r.errors for k, r in results.items() if r.errors}
    if errors:
        lines += ["Refused calls (tolerated, counted):", ""]
        lines += [f"- ({k}) {e}" for k, e in errors.items()]
        lines.append("")
    return "\n".join(lines)


def chart_svg(results: dict[str, ScenarioResult]) -> str:
    """Stockout outlet-days per simulated day, one line per scenario, plus the totals as
    bars: plain SVG, no library, opens in any browser."""
    w, h, left, right, top, bottom = 760, 360, 60, 200, 40, 40
    days = max((len(r.daily_stockouts) for r in results.values()), default=1)
    peak = max((max(r.daily_stockouts, default=0) for r in results.values()), default=1) or 1
    pw, ph = w - left - right, h - top - bottom

    def x(d: int) -> float:
        return left + (pw * d / max(days - 1, 1))

    def y(v: float) -> float:
        return top + ph - ph * v / peak

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">'
        "Stockout outlet-days per simulated day</text>",
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>',
    ]
    for k in range(5):
        v = peak * k / 4
        out.append(
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>'
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" '
            'stroke="#eee"/>'
        )
    for d in range(0, days, max(1, days // 10)):
        out.append(f'<text x="{x(d):.1f}" y="{top + ph + 16}" text-anchor="middle">{d + 1}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 6}" text-anchor="middle">simulated day</text>')
    for n, r in enumerate(results.values()):
        colour = COLOURS.get(r.key, "#555")
        pts = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in enumerate(r.daily_stockouts))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 10 + n * 40
        out.append(
            f'<rect x="{w - right + 16}" y="{ly}" width="14" height="14" fill="{colour}"/>'
            f'<text x="{w - right + 36}" y="{ly + 11}">({r.key}) {escape(r.title)}</text>'
            f'<text x="{w - right + 36}" y="{ly + 27}" fill="#555">'
            f"{r.stockout_outlet_days:,} outlet-days</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(
    out: Path, config: dict[str, Any], results: dict[str, ScenarioResult], summary: Summary
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(to_json(config, results, summary), indent=2))
    (out / "latest.md").write_text(to_markdown(config, results, summary))
    (out / "chart.svg").write_text(chart_svg(results))
