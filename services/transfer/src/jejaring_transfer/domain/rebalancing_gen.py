"""Seeded rebalancing instances for benchmarks and tests (no I/O, deterministic per seed).

Outlets sit in community clusters around Jakarta (about 60 x 60 km); per sku about
`share` of the outlets are out of balance, half with surplus above their maximum and half
short of their target, and the distribution centre sells at a unit price.
"""

from __future__ import annotations

import numpy as np

from .rebalancing import CostModel, Problem, Sink, Source

CENTRE = (-6.25, 106.85)
SPAN_DEG = 0.55  # the network's width in degrees (about 60 km)


def outlet_sites(n: int, seed: int) -> np.ndarray:
    """(n, 2) lat/lon of `n` outlets in clustered communities."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // 25)
    centres = np.array(CENTRE) + rng.uniform(-SPAN_DEG / 2, SPAN_DEG / 2, size=(clusters, 2))
    home = rng.integers(0, clusters, size=n)
    sites: np.ndarray = centres[home] + rng.normal(0.0, 0.04, size=(n, 2))
    return sites


def sku_problem(
    rng: np.random.Generator,
    sites: np.ndarray,
    sku: str,
    *,
    share: float = 0.1,
    min_quantity: int | None = None,
    case_pack: int | None = None,
    costs: CostModel | None = None,
    supplier: bool = True,
) -> Problem:
    """One sku over the outlets at `sites`: about `share` of them surplus or short."""
    n = len(sites)
    picked = np.flatnonzero(rng.random(n) < share)
    surplus = rng.random(picked.size) < 0.5
    return _problem(
        rng,
        sku,
        sites[picked[surplus]],
        sites[picked[~surplus]],
        min_quantity=min_quantity,
        case_pack=case_pack,
        costs=costs,
        supplier=supplier,
        ids=(picked[surplus], picked[~surplus]),
    )


def square(
    n: int,
    seed: int,
    *,
    min_quantity: int = 1,
    case_pack: int = 1,
    costs: CostModel | None = None,
    supplier: bool = True,
) -> Problem:
    """n outlets with surplus x n short outlets (plus the distribution centre), for gaps."""
    rng = np.random.default_rng(seed)
    sites = outlet_sites(max(4 * n, 25), seed)
    picked = rng.choice(len(sites), size=2 * n, replace=False)
    return _problem(
        rng,
        f"sq{n}-{seed}",
        sites[picked[:n]],
        sites[picked[n:]],
        min_quantity=min_quantity,
        case_pack=case_pack,
        costs=costs,
        supplier=supplier,
        ids=(picked[:n], picked[n:]),
    )


def _problem(
    rng: np.random.Generator,
    sku: str,
    src_sites: np.ndarray,
    snk_sites: np.ndarray,
    *,
    min_quantity: int | None,
    case_pack: int | None,
    costs: CostModel | None,
    supplier: bool,
    ids: tuple[np.ndarray, np.ndarray],
) -> Problem:
    pack = case_pack if case_pack is not None else int(rng.choice([1, 1, 1, 2, 6]))
    minimum = min_quantity if min_quantity is not None else int(rng.choice([1, 2, 4, 6, 12]))
    perishable = rng.random() < 0.1
    give = rng.integers(5, 61, size=len(src_sites))
    need = rng.integers(3, 51, size=len(snk_sites))
    available = rng.integers(0, 6, size=len(snk_sites))
    rate = rng.uniform(0.5, 8.0, size=len(snk_sites))
    expiring = rng.random(len(src_sites)) < (0.5 if perishable else 0.0)
    sources = [
        Source(f"o{i}", float(lat), float(lon), int(q), expiring=bool(e))
        for i, (lat, lon), q, e in zip(
            ids[0].tolist(), src_sites.tolist(), give.tolist(), expiring.tolist(), strict=True
        )
    ]
    if supplier:
        sources.append(Source("dc", *CENTRE, int(4 * need.sum() // 5) + 1, unit_price=2_000))
    sinks = [
        Sink(f"o{i}", float(lat), float(lon), int(q), int(a), float(r))
        for i, (lat, lon), q, a, r in zip(
            ids[1].tolist(),
            snk_sites.tolist(),
            need.tolist(),
            available.tolist(),
            rate.tolist(),
            strict=True,
        )
    ]
    return Problem(sku, sources, sinks, minimum, pack, costs or CostModel())


def network_problems(outlets: int, skus: int, seed: int, *, share: float = 0.1) -> list[Problem]:
    """`skus` problems over one network of `outlets` outlets."""
    sites = outlet_sites(outlets, seed)
    rng = np.random.default_rng(seed + 1)
    return [sku_problem(rng, sites, f"sku{s}", share=share) for s in range(skus)]
