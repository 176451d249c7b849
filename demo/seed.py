"""The seeded network: outlets around Depok and Jabodetabek, the assortment (members'
products included), community suppliers in business clusters, demand and the fixed
weekly delivery plan.

Everything here is pure and deterministic given the seed: every scenario of a run gets the
same network, the same demand and the same deliveries, so the scenarios differ only in
what the services decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HISTORY_DAYS = 14
"""Days of sales before the run, posted with their past dates so the stock service learns
each level's rate (its window needs complete UTC days, which an accelerated clock never
completes)."""

WEEKDAY_FACTOR = (1.0, 0.95, 0.95, 1.0, 1.1, 1.25, 1.15)
NEG_BINOMIAL_K = 3.0  # dispersion of daily demand (Poisson when it grows without bound)
# The distribution centre ships the plan plus a safety margin, as real ones do: the network
# as a whole holds enough, but not where local taste needs it (what balancing is for).
SUPPLY_MARGIN = 1.15

# (area, region, lat, lon, weight): kecamatan around Depok first, as in the seed articles.
AREAS: tuple[tuple[str, str, float, float, float], ...] = (
    ("Cilodong", "depok", -6.430, 106.840, 3),
    ("Sukmajaya", "depok", -6.400, 106.845, 3),
    ("Beji", "depok", -6.372, 106.820, 2),
    ("Pancoran Mas", "depok", -6.400, 106.800, 3),
    ("Cimanggis", "depok", -6.370, 106.870, 2),
    ("Tapos", "depok", -6.420, 106.880, 2),
    ("Sawangan", "depok", -6.405, 106.760, 2),
    ("Cinere", "depok", -6.330, 106.780, 1),
    ("Limo", "depok", -6.360, 106.780, 1),
    ("Cipayung", "depok", -6.430, 106.800, 1),
    ("Jagakarsa", "jakarta", -6.330, 106.820, 2),
    ("Pasar Minggu", "jakarta", -6.290, 106.840, 1),
    ("Ciracas", "jakarta", -6.320, 106.870, 1),
    ("Kramat Jati", "jakarta", -6.270, 106.870, 1),
    ("Cibinong", "bogor", -6.480, 106.850, 2),
    ("Bojonggede", "bogor", -6.490, 106.800, 1),
    ("Cileungsi", "bogor", -6.400, 106.960, 1),
    ("Jatiasih", "bekasi", -6.300, 106.960, 1),
    ("Pondok Gede", "bekasi", -6.280, 106.920, 1),
    ("Pamulang", "tangsel", -6.340, 106.740, 1),
    ("Ciputat", "tangsel", -6.310, 106.750, 1),
)

CLUSTERS: tuple[tuple[str, str], ...] = (
    ("food", "Olahan pangan"),
    ("beverages", "Minuman"),
    ("household", "Rumah tangga"),
    ("crafts", "Kerajinan"),
    ("printing", "Grafika"),
    ("literacy", "Literasi"),
)

STAPLES: tuple[tuple[str, str, str, int], ...] = (
    # (name, unit, category, dc pack)
    ("Beras Premium 5kg", "sak", "sembako", 4),
    ("Minyak Goreng 2L", "pouch", "sembako", 6),
    ("Gula Pasir 1kg", "pak", "sembako", 10),
    ("Tepung Terigu 1kg", "pak", "sembako", 10),
    ("Telur Ayam 10 butir", "pak", "sembako", 6),
    ("Mi Instan Goreng", "bks", "makanan", 40),
    ("Mi Instan Kuah Soto", "bks", "makanan", 40),
    ("Kecap Manis 550ml", "btl", "bumbu", 12),
    ("Saus Sambal 340ml", "btl", "bumbu", 12),
    ("Garam Dapur 250g", "pak", "bumbu", 20),
    ("Susu UHT 1L", "kotak", "minuman", 12),
    ("Susu Kental Manis", "klg", "minuman", 24),
    ("Teh Celup 25s", "kotak", "minuman", 12),
    ("Kopi Sachet 10s", "renceng", "minuman", 12),
    ("Air Mineral 600ml", "btl", "minuman", 24),
    ("Air Mineral 1.5L", "btl", "minuman", 12),
    ("Sabun Mandi Batang", "pcs", "perawatan", 24),
    ("Sabun Cuci Piring 800ml", "pouch", "kebersihan", 12),
    ("Deterjen Bubuk 800g", "pak", "kebersihan", 12),
    ("Pasta Gigi 190g", "pcs", "perawatan", 12),
    ("Sampo Sachet 12s", "renceng", "perawatan", 12),
    ("Tisu Wajah 250s", "pak", "kebersihan", 12),
    ("Popok Bayi M 20s", "pak", "bayi", 6),
    ("Roti Tawar", "pcs", "makanan", 10),
    ("Biskuit Kelapa", "pak", "makanan", 24),
    ("Sarden Kaleng 155g", "klg", "makanan", 24),
    ("Kornet 198g", "klg", "makanan", 24),
    ("Minyak Kayu Putih 60ml", "btl", "perawatan", 12),
    ("Obat Nyamuk Bakar", "kotak", "kebersihan", 12),
    ("Pembalut 10s", "pak", "perawatan", 12),
    ("Kacang Tanah 250g", "pak", "makanan", 20),
    ("Wafer Cokelat", "pak", "makanan", 24),
    ("Minuman Isotonik", "btl", "minuman", 24),
    ("Sirup Cocopandan", "btl", "minuman", 12),
    ("Santan Instan 65ml", "pcs", "bumbu", 36),
    ("Bumbu Nasi Goreng", "sachet", "bumbu", 36),
    ("Pewangi Pakaian 800ml", "pouch", "kebersihan", 12),
    ("Karbol Wangi 800ml", "btl", "kebersihan", 12),
    ("Sikat Gigi", "pcs", "perawatan", 12),
    ("Korek Api Gas", "pcs", "rumah", 50),
)
BRANDS = ("Sinar", "Mawar", "Kencana", "Bintang", "Cahaya")

MEMBER_MADE: tuple[tuple[str, str, str], ...] = (
    # (name, unit, cluster): members' (UMKM) products, supplied by community suppliers
    ("Keripik Singkong Balado", "pak", "food"),
    ("Keripik Tempe", "pak", "food"),
    ("Rempeyek Kacang", "pak", "food"),
    ("Sambal Bawang Botol", "btl", "food"),
    ("Kue Nastar Toples", "toples", "food"),
    ("Abon Sapi 100g", "pak", "food"),
    ("Dodol Betawi", "pak", "food"),
    ("Kerupuk Kulit", "pak", "food"),
    ("Kopi Bubuk Robusta Lokal", "pak", "beverages"),
    ("Madu Hutan 250ml", "btl", "beverages"),
    ("Sirup Jahe Merah", "btl", "beverages"),
    ("Jamu Kunyit Asam", "btl", "beverages"),
    ("Teh Rosela Kering", "pak", "beverages"),
    ("Sabun Herbal Sereh", "pcs", "household"),
    ("Lilin Aromaterapi", "pcs", "household"),
    ("Keset Kain Perca", "pcs", "household"),
    ("Tas Anyaman Pandan", "pcs", "crafts"),
    ("Gantungan Kunci Batik", "pcs", "crafts"),
    ("Dompet Tenun", "pcs", "crafts"),
    ("Buku Tulis Daur Ulang", "pcs", "printing"),
    ("Kartu Ucapan Cetak", "pak", "printing"),
    ("Kalender Komunitas", "pcs", "printing"),
    ("Buku Cerita Anak", "pcs", "literacy"),
    ("Buku Resep Nusantara", "pcs", "literacy"),
)


@dataclass(frozen=True, slots=True)
class Outlet:
    id: str
    name: str
    community: str
    region: str
    lat: float
    lon: float
    size: float  # relative footfall; the delivery plan knows it
    delivery_weekday: int  # day of the week the weekly delivery arrives


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    unit: str
    category: str
    cluster: str | None
    member_made: bool
    base_rate: float  # units per day at an outlet of size 1
    dc_pack: int  # the delivery plan ships whole packs


@dataclass(frozen=True, slots=True)
class Offer:
    sku: str
    quantity: int  # the supplier's stock on call for the whole run
    unit_price: int
    lead_time_hours: int


@dataclass(frozen=True, slots=True)
class Supplier:
    key: str
    name: str
    kind: str
    community: str
    regions: tuple[str, ...]
    clusters: tuple[str, ...]
    offers: tuple[Offer, ...]
    delivers: tuple[str, ...] = ()  # member products it brings on the weekly plan


@dataclass(frozen=True, slots=True)
class Delivery:
    day: int
    outlet: int
    sku: int
    quantity: int
    supplier: str | None  # None: the distribution center


@dataclass
class Network:
    seed: int
    days: int
    outlets: list[Outlet]
    products: list[Product]
    suppliers: list[Supplier]
    carried: np.ndarray  # bool, outlets x skus
    mean: np.ndarray  # true mean daily demand, outlets x skus (0 where not carried)
    planned: np.ndarray  # what the delivery plan believes (no local taste)
    demand: np.ndarray  # int, days x outlets x skus
    history: np.ndarray  # int, HISTORY_DAYS x outlets x skus (oldest first)
    opening: np.ndarray  # int, outlets x skus: on hand when the run starts
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def levels(self) -> int:
        return int(self.carried.sum())

    def inventory_in(self) -> dict[str, int]:
        """Units that enter the network in every scenario alike."""
        on_call = sum(o.quantity for s in self.suppliers for o in s.offers)
        return {
            "opening": int(self.opening.sum()),
            "scheduled_deliveries": int(sum(d.quantity for d in self.deliveries)),
            "suppliers_on_call": on_call,
        }


def _daily(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """Negative-binomial daily demand (over-dispersed around its mean)."""
    p = NEG_BINOMIAL_K / (NEG_BINOMIAL_K + np.maximum(mean, 1e-9))
    out: np.ndarray = rng.negative_binomial(NEG_BINOMIAL_K, p)
    return np.where(mean > 0, out, 0)


def build(seed: int, *, outlets: int, skus: int, days: int) -> Network:
    rng = np.random.default_rng(seed)

    # -- outlets: clustered around the kecamatan, weighted towards Depok
    weights = np.array([a[4] for a in AREAS], dtype=float)
    picks = rng.choice(len(AREAS), size=outlets, p=weights / weights.sum())
    counter: dict[str, int] = {}
    outlet_list: list[Outlet] = []
    for i, a in enumerate(picks):
        area, region, lat, lon, _w = AREAS[int(a)]
        counter[area] = counter.get(area, 0) + 1
        outlet_list.append(
            Outlet(
                id=f"o-{i + 1:03d}",
                name=f"Gerai {area} {counter[area]}",
                community=area,
                region=region,
                lat=round(lat + rng.normal(0, 0.008), 5),
                lon=round(lon + rng.normal(0, 0.008), 5),
                size=float(np.clip(rng.lognormal(0.0, 0.35), 0.5, 2.2)),
                delivery_weekday=i % 7,
            )
        )

    # -- products: staples by pareto rank, about a fifth members' products
    n_member = min(len(MEMBER_MADE), max(1, round(skus * 0.2)))
    n_staple = skus - n_member
    staple_names = [
        (f"{name} {brand}", unit, cat, pack)
        for brand in BRANDS
        for (name, unit, cat, pack) in STAPLES
    ]
    order = rng.permutation(len(staple_names))[:n_staple]
    products: list[Product] = []
    for rank, idx in enumerate(order):
        name, unit, cat, pack = staple_names[int(idx)]
        # Zipf-like: a few fast movers make most of the units (pareto A)
        rate = 7.0 / (rank + 1) ** 0.85
        products.append(
            Product(
                sku=f"SKU-{rank + 1:04d}",
                name=name,
                unit=unit,
                category=cat,
                cluster=None,
                member_made=False,
                base_rate=round(rate, 4),
                # slower movers come in packs of ~10 days, so not every week
                dc_pack=pack if rate >= 1.5 else max(2, round(rate * 10)),
            )
        )
    member_idx = rng.permutation(len(MEMBER_MADE))[:n_member]
    for k, idx in enumerate(member_idx):
        name, unit, cluster = MEMBER_MADE[int(idx)]
        products.append(
            Product(
                sku=f"UMKM-{k + 1:03d}",
                name=name,
                unit=unit,
                category="umkm",
                cluster=cluster,
                member_made=True,
                base_rate=round(float(rng.uniform(0.4, 1.6)), 4),
                dc_pack=4,
            )
        )
    n_skus = len(products)

    # -- community suppliers: one small producer per cluster in use, each at home in a
    # community; members' products sell best near home (local taste)
    home: dict[int, str] = {}
    suppliers: list[Supplier] = []
    areas_used = sorted({o.community for o in outlet_list})
    by_cluster: dict[str, list[int]] = {}
    for j, p in enumerate(products):
        if p.cluster is not None:
            by_cluster.setdefault(p.cluster, []).append(j)
    for cluster, members in sorted(by_cluster.items()):
        community = areas_used[int(rng.integers(len(areas_used)))]
        for j in members:
            home[j] = community
        suppliers.append(
            Supplier(
                key=f"umkm-{cluster}",
                name=f"UMKM {dict(CLUSTERS)[cluster]} {community}",
                kind="small_producer",
                community=community,
                regions=("depok",),
                clusters=(cluster,),
                offers=(),
                delivers=tuple(products[j].sku for j in members),
            )
        )

    # -- assortment and demand
    size = np.array([o.size for o in outlet_list])
    base = np.array([p.base_rate for p in products])
    carry_p = np.where(np.arange(n_skus) < max(n_staple // 10, 1), 1.0, 0.1)
    carried = rng.random((outlets, n_skus)) < carry_p[None, :]
    taste = rng.lognormal(-0.18, 0.6, size=(outlets, n_skus))  # mean ~1
    for j, community in home.items():
        local = np.array([o.community == community for o in outlet_list])
        carried[local, j] = True
        taste[local, j] *= 2.0
    planned = np.where(carried, base[None, :] * size[:, None], 0.0)
    mean = planned * taste

    weekday = np.array(WEEKDAY_FACTOR)
    demand = np.stack([_daily(rng, mean * weekday[d % 7]) for d in range(days)]).astype(np.int64)
    history = np.stack(
        [_daily(rng, mean * weekday[(d - HISTORY_DAYS) % 7]) for d in range(HISTORY_DAYS)]
    ).astype(np.int64)

    # -- what enters the network: opening stock (about 6 days of the plan) and a weekly
    # delivery per outlet topping up to the plan, in whole packs (a carry keeps the total
    # equal to the plan over time). The plan knows outlet sizes, not local taste: that
    # mismatch is what balancing has to fix.
    packs = np.array([p.dc_pack for p in products])
    opening = np.where(carried, np.ceil(planned * 6.0), 0).astype(np.int64)
    deliveries: list[Delivery] = []
    carry = np.zeros((outlets, n_skus))
    supplier_of = {
        sku: s.key for s in suppliers for sku in s.delivers
    }  # members' products come from their producer, staples from the DC
    for day in range(days):
        for i, o in enumerate(outlet_list):
            if day % 7 != o.delivery_weekday:
                continue
            carry[i] += planned[i] * 7.0 * SUPPLY_MARGIN
            qty = np.floor(carry[i] / packs) * packs
            carry[i] -= qty
            for jj in np.flatnonzero(qty > 0):
                j = int(jj)
                deliveries.append(
                    Delivery(day, i, j, int(qty[j]), supplier_of.get(products[j].sku))
                )

    # -- stock on call: producers keep a few days of their products, community managers
    # hold fast movers the DC's partners fail to supply (seed article 004)
    network_rate = mean.sum(axis=0)
    with_offers: list[Supplier] = []
    for s in suppliers:
        offers = tuple(
            Offer(
                sku=sku,
                quantity=max(4, int(network_rate[_index(products, sku)] * 2)),
                unit_price=int(rng.integers(8, 40)) * 1000,
                lead_time_hours=24,
            )
            for sku in s.delivers
        )
        with_offers.append(
            Supplier(s.key, s.name, s.kind, s.community, s.regions, s.clusters, offers, s.delivers)
        )
    fast = [j for j in range(n_skus) if not products[j].member_made][: max(2, n_staple // 20)]
    for m, community in enumerate(("Cilodong", "Sukmajaya")):
        mine = fast[m::2]
        with_offers.append(
            Supplier(
                key=f"pengurus-{m + 1}",
                name=f"Pengurus Komunitas {community}",
                kind="community_manager",
                community=community,
                regions=("depok",),
                clusters=(),
                offers=tuple(
                    Offer(
                        sku=products[j].sku,
                        quantity=max(4, int(network_rate[j] * 1.0)),
                        unit_price=int(rng.integers(5, 25)) * 1000,
                        lead_time_hours=24,
                    )
                    for j in mine
                ),
            )
        )

    return Network(
        seed=seed,
        days=days,
        outlets=outlet_list,
        products=products,
        suppliers=with_offers,
        carried=carried,
        mean=mean,
        planned=planned,
        demand=demand,
        history=history,
        opening=opening,
        deliveries=deliveries,
    )


def _index(products: list[Product], sku: str) -> int:
    return next(j for j, p in enumerate(products) if p.sku == sku)
