"""The catalog service on a real broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from jejaring_catalog.config import CatalogSettings
from jejaring_catalog.entrypoints.app import create_app
from jejaring_shared.settings import KafkaSettings
from support.kafka_io import assert_matches_asyncapi, read_all
from support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def catalog_app(db_url: str, bootstrap: str) -> FastAPI:
    return create_app(
        CatalogSettings(
            database_url=db_url,
            kafka=KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0),
            relay_idle_poll_s=0.1,
        )
    )


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://catalog") as client:
            yield client


async def events_for(bootstrap: str, topic: str, prefix: str) -> list[Any]:
    """This test's events (keys start with prefix) on a topic other tests share."""
    msgs = await read_all(bootstrap, topic, expect=10**9, timeout=3)
    return [m for m in msgs if m.key is not None and m.key.decode().startswith(prefix)]


def error_of(resp: httpx.Response) -> tuple[int, str, str | None]:
    err = resp.json()["error"]
    return resp.status_code, err["code"], err["field"]


async def product_rows(app: FastAPI, prefix: str) -> list[tuple[Any, ...]]:
    async with app.state.runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT * FROM products WHERE sku LIKE :p ORDER BY sku"), {"p": prefix + "%"}
        )
        return [tuple(r) for r in rows]


async def test_products_crud_search_retire_and_their_events(db_url: str, kafka_broker: Any) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    p = f"c{uuid.uuid4().hex[:6]}-"
    app = catalog_app(db_url, bootstrap)
    async with running(app) as c:
        for code, name in [("food", "Food"), ("printing", "Printing and graphics")]:
            assert (
                await c.post("/api/v1/clusters", json={"code": code, "name": name})
            ).status_code == 201
        assert (
            await c.post("/api/v1/categories", json={"code": "snacks", "name": "Snacks"})
        ).status_code == 201
        dup = await c.post("/api/v1/clusters", json={"code": "food", "name": "Again"})
        assert error_of(dup) == (409, "duplicate_cluster", "code")

        kopi = {
            "sku": f"{p}KOPI",
            "name": "Kopi Gayo 250g",
            "barcode": "8991234567001",
            "unit": "pack",
            "category": "snacks",
            "cluster": "food",
            "case_pack": 12,
            "min_transfer_qty": 6,
            "perishable": True,
            "shelf_life_days": 180,
            "member_made": True,
            "pareto_class": "A",
        }
        created = await c.post("/api/v1/products", json=kopi)
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "active"
        banner = {
            "sku": f"{p}BANNER",
            "name": "Banner print 1m",
            "unit": "m",
            "cluster": "printing",
        }
        assert (await c.post("/api/v1/products", json=banner)).status_code == 201

        # Bad input: 4xx with a stable code and the field; nothing changes.
        before = await product_rows(app, p)
        bad_cases = [
            ({**kopi}, (409, "duplicate_sku", "sku")),
            ({**kopi, "sku": f"{p}X1", "case_pack": -1}, (422, "too_small", "case_pack")),
            ({**kopi, "sku": f"{p}X2", "name": "n" * 201}, (422, "too_long", "name")),
            ({**kopi, "sku": f"{p}X3", "status": "retired"}, (422, "unknown_field", "status")),
            ({**kopi, "sku": f"{p}X4", "id": 7}, (422, "unknown_field", "id")),
            ({**kopi, "sku": f"{p}X5", "cluster": "nope"}, (422, "unknown_cluster", "cluster")),
            ({**kopi, "sku": f"{p}X6"}, (409, "duplicate_barcode", "barcode")),
            (
                {**kopi, "sku": f"{p}X7", "barcode": None, "shelf_life_days": None},
                (422, "required", "shelf_life_days"),
            ),
            ({"name": "no sku", "unit": "pcs"}, (422, "required", "sku")),
        ]
        for body, expected in bad_cases:
            assert error_of(await c.post("/api/v1/products", json=body)) == expected, body
        assert await product_rows(app, p) == before

        # Update: only what is sent changes; the same values again emit nothing.
        upd = await c.patch(f"/api/v1/products/{p}KOPI", json={"name": "Kopi Gayo 500g"})
        assert upd.status_code == 200 and upd.json()["name"] == "Kopi Gayo 500g"
        assert upd.json()["case_pack"] == 12
        same = await c.patch(f"/api/v1/products/{p}KOPI", json={"name": "Kopi Gayo 500g"})
        assert same.status_code == 200
        bad = await c.patch(f"/api/v1/products/{p}KOPI", json={"sku": "other"})
        assert error_of(bad) == (422, "unknown_field", "sku")
        missing = await c.patch(f"/api/v1/products/{p}NONE", json={"name": "x"})
        assert error_of(missing) == (404, "product_not_found", "sku")

        # Search by name, barcode and cluster; pages.
        found = (await c.get("/api/v1/products", params={"q": "gayo"})).json()
        assert [i["sku"] for i in found["items"] if i["sku"].startswith(p)] == [f"{p}KOPI"]
        by_code = (await c.get("/api/v1/products", params={"barcode": "8991234567001"})).json()
        assert [i["sku"] for i in by_code["items"]] == [f"{p}KOPI"]
        printing = (await c.get("/api/v1/products", params={"cluster": "printing", "q": p})).json()
        assert [i["sku"] for i in printing["items"]] == [f"{p}BANNER"]
        page = (await c.get("/api/v1/products", params={"q": p, "limit": 1, "offset": 1})).json()
        assert page["total"] == 2 and [i["sku"] for i in page["items"]] == [f"{p}KOPI"]
        assert (await c.get("/api/v1/products", params={"limit": 0})).status_code == 422

        # Retire: once; again is a no-op; a retired product is not updated.
        r1 = await c.post(f"/api/v1/products/{p}BANNER/retire")
        r2 = await c.post(f"/api/v1/products/{p}BANNER/retire")
        assert r1.json()["status"] == r2.json()["status"] == "retired"
        gone = await c.patch(f"/api/v1/products/{p}BANNER", json={"name": "x"})
        assert error_of(gone) == (409, "product_retired", "sku")
        active = (await c.get("/api/v1/products", params={"q": p})).json()
        assert [i["sku"] for i in active["items"]] == [f"{p}KOPI"]

        async def published() -> list[Any]:
            got = await events_for(bootstrap, "catalog.events", p)
            return got if len(got) >= 4 else []

        msgs = await wait_until(published, what="catalog events in Kafka")
    envelopes = [assert_matches_asyncapi(m.value) for m in msgs]
    assert Counter(e.type for e in envelopes) == {
        "catalog.product_created": 2,
        "catalog.product_updated": 1,
        "catalog.product_retired": 1,
    }
    assert all(e.key == e.payload["sku"] for e in envelopes)
    updated = next(e for e in envelopes if e.type == "catalog.product_updated")
    assert updated.payload["name"] == "Kopi Gayo 500g" and updated.payload["case_pack"] == 12


def ten_thousand_rows(p: str) -> tuple[str, dict[int, str]]:
    """10,000 products, 50 of them bad in different ways; returns the CSV and bad lines."""
    lines = [
        "sku,name,barcode,unit,category,cluster,case_pack,min_transfer_qty,"
        "perishable,shelf_life_days,member_made,pareto_class"
    ]
    bad: dict[int, str] = {}
    kinds = [
        ("case_pack", "too_small"),
        ("name", "too_long"),
        ("cluster", "unknown_cluster"),
        ("sku", "duplicate_sku"),
        ("shelf_life_days", "required"),
        ("pareto_class", "invalid"),
        ("case_pack", "invalid"),
        ("barcode", "invalid"),
        ("perishable", "invalid"),
        ("min_transfer_qty", "too_small"),
    ]
    for i in range(10_000):
        line = i + 2  # the header is line 1
        sku, name, case_pack, mtq, cluster = f"{p}{i:05d}", f"Produk UMKM {i}", "6", "2", "food"
        perishable, shelf, pareto, barcode = "false", "", "ABC"[i % 3], f"{10_000_000 + i}"
        if i % 200 == 7:
            field, code = kinds[(i // 200) % len(kinds)]
            bad[line] = f"{field}:{code}"
            if code == "too_small" and field == "case_pack":
                case_pack = "-3"
            elif field == "name":
                name = "x" * 201
            elif field == "cluster":
                cluster = "no-such-cluster"
            elif field == "sku":
                sku = f"{p}{i - 1:05d}"  # the row above took it
            elif field == "shelf_life_days":
                perishable = "true"
            elif field == "pareto_class":
                pareto = "Z"
            elif field == "case_pack":
                case_pack = "six"
            elif field == "barcode":
                barcode = "12AB"
            elif field == "perishable":
                perishable = "maybe"
            else:
                mtq = "0"
        lines.append(
            f"{sku},{name},{barcode},pcs,,{cluster},{case_pack},{mtq},{perishable},{shelf},"
            f"{'true' if i % 5 == 0 else 'false'},{pareto}"
        )
    return "\n".join(lines) + "\n", bad


async def test_csv_import_of_10000_products_with_50_bad_rows_is_repeatable(
    db_url: str, kafka_broker: Any
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    p = f"i{uuid.uuid4().hex[:6]}-"
    text, bad = ten_thousand_rows(p)
    assert len(bad) == 50
    app = catalog_app(db_url, bootstrap)
    async with running(app) as c:
        await c.post("/api/v1/clusters", json={"code": "food", "name": "Food"})
        headers = {"content-type": "text/csv"}
        started = time.perf_counter()
        first = await c.post("/api/v1/products:import", content=text, headers=headers)
        took = time.perf_counter() - started
        assert first.status_code == 200, first.text
        report = first.json()
        assert (report["rows"], report["created"], report["rejected"]) == (10_000, 9_950, 50)
        assert {e["line"]: f"{e['field']}:{e['code']}" for e in report["errors"]} == bad
        assert all(e["reason"] for e in report["errors"])
        assert took < 30, f"import took {took:.1f}s"
        rows_after_first = await product_rows(app, p)
        assert len(rows_after_first) == 9_950

        again = (await c.post("/api/v1/products:import", content=text, headers=headers)).json()
        assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 9_950)
        assert again["errors"] == report["errors"]
        assert await product_rows(app, p) == rows_after_first

        # The export reads back in as "unchanged": the formats agree.
        exported = (await c.get("/api/v1/products:export")).text
        mine = [ln for ln in exported.splitlines()[1:] if ln.startswith(p)]
        assert len(mine) == 9_950
        round_trip = "\n".join([exported.splitlines()[0], *mine]) + "\n"
        back = (await c.post("/api/v1/products:import", content=round_trip, headers=headers)).json()
        assert (back["unchanged"], back["rejected"]) == (9_950, 0)

        # A file that cannot be read at all is refused whole.
        no_header = await c.post("/api/v1/products:import", content="", headers=headers)
        assert error_of(no_header) == (400, "empty_file", None)
        odd = await c.post(
            "/api/v1/products:import", content="sku,name,unit,colour\n", headers=headers
        )
        assert error_of(odd) == (400, "unknown_column", "colour")

        async def all_created() -> list[Any]:
            got = await events_for(bootstrap, "catalog.events", p)
            return got if len(got) >= 9_950 else []

        msgs = await wait_until(all_created, timeout=120, what="9,950 catalog events")
    assert len(msgs) == 9_950  # the second import and the round trip published nothing
    assert {json.loads(m.value)["type"] for m in msgs} == {"catalog.product_created"}
    for m in msgs[::997]:
        assert_matches_asyncapi(m.value)


@pytest.mark.parametrize("bad_body", [b"\xff\xfe not utf-8"])
async def test_import_refuses_a_file_that_is_not_utf8(
    bad_body: bytes, tmp_path: Path, kafka_broker: Any
) -> None:
    app = catalog_app(f"sqlite+aiosqlite:///{tmp_path}/c.db", kafka_broker.bootstrap_servers)
    async with running(app) as c:
        resp = await c.post("/api/v1/products:import", content=bad_body)
    assert error_of(resp) == (400, "invalid_encoding", None)


async def test_a_create_racing_another_past_the_checks_is_a_conflict_not_an_outage(
    db_url: str, kafka_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two creates of one sku (or barcode) at once both pass the read-before-insert
    checks; the loser is refused by the database at its insert (or update), which was
    outside the error mapping. That is a 409 with the field, nothing of it is written, not
    a 503."""
    from jejaring_catalog.adapters import repository as catalog_repo

    app = catalog_app(db_url, kafka_broker.bootstrap_servers)
    async with running(app) as client:
        await client.post("/api/v1/clusters", json={"code": "food", "name": "Food"})
        first = {"sku": "RACE-1", "name": "Kacang", "unit": "pack", "cluster": "food"}
        first["barcode"] = "8991234567891"
        assert (await client.post("/api/v1/products", json=first)).status_code == 201

        async def nothing_yet(*_a: Any, **_k: Any) -> Any:
            return None  # as if the other create had not committed when we looked

        async def no_owners(*_a: Any, **_k: Any) -> dict[str, str]:
            return {}

        monkeypatch.setattr(catalog_repo, "get_product", nothing_yet)
        monkeypatch.setattr(catalog_repo, "barcode_owners", no_owners)
        again = await client.post("/api/v1/products", json={**first, "barcode": None})
        assert error_of(again) == (409, "duplicate_sku", "sku")
        taken = await client.post("/api/v1/products", json={**first, "sku": "RACE-2"})
        assert error_of(taken) == (409, "duplicate_barcode", "barcode")
        monkeypatch.undo()
        assert [r[0] for r in await product_rows(app, "RACE-")] == ["RACE-1"]


async def test_an_import_racing_a_create_is_a_conflict_and_an_export_imports_back(
    db_url: str, kafka_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import that creates a sku another create committed after the import read (the
    database's unique constraint catches it) is a 409 with nothing applied, not a 503;
    and an export, retired products included, imports back as all unchanged."""
    from jejaring_catalog.adapters import repository as catalog_repo

    app = catalog_app(db_url, kafka_broker.bootstrap_servers)
    async with running(app) as client:
        base = {"name": "Kacang", "unit": "pack"}
        for sku in ("IMP-1", "IMP-OLD"):
            assert (
                await client.post("/api/v1/products", json={"sku": sku, **base})
            ).status_code == 201
        assert (await client.post("/api/v1/products/IMP-OLD/retire")).status_code == 200
        exported = (await client.get("/api/v1/products:export")).text
        csv_headers = {"content-type": "text/csv"}
        back = await client.post("/api/v1/products:import", content=exported, headers=csv_headers)
        assert back.status_code == 200, back.text
        report = back.json()
        assert report["rejected"] == 0 and report["unchanged"] == report["rows"], report

        async def none_yet(*_a: Any, **_k: Any) -> dict[str, Any]:
            return {}  # as if the other create had not committed when the import looked

        monkeypatch.setattr(catalog_repo, "products_by_sku", none_yet)
        text = "sku,name,unit\nIMP-NEW,Baru,pack\nIMP-1,Kacang,pack\n"
        resp = await client.post("/api/v1/products:import", content=text, headers=csv_headers)
        assert error_of(resp) == (409, "import_conflict", None)
        monkeypatch.undo()
        assert [r[0] for r in await product_rows(app, "IMP-NEW")] == []


async def test_a_change_racing_a_retirement_waits_for_it_and_sees_it(
    db_url: str, kafka_broker: Any
) -> None:
    """A PATCH (or an import) read the product unlocked: on PostgreSQL a retirement
    committing meanwhile was missed, and `product_updated` followed `product_retired`,
    which transfer's projection takes as the product being back. The read now holds the
    row: the change waits for the retirement and is refused."""
    import asyncio

    app = catalog_app(db_url, kafka_broker.bootstrap_servers)
    async with running(app) as client:
        body = {"sku": "RET-1", "name": "Kacang", "unit": "pack"}
        assert (await client.post("/api/v1/products", json=body)).status_code == 201
        engine = app.state.runtime.engine
        async with engine.connect() as other:
            # Another transaction retiring it, not committed yet.
            await other.execute(
                sa.text("UPDATE products SET status = 'retired' WHERE sku = 'RET-1'")
            )
            patch = asyncio.create_task(
                client.patch("/api/v1/products/RET-1", json={"name": "Kacang Baru"})
            )
            await asyncio.sleep(0.5)
            assert not patch.done()  # waiting for the row (or, on SQLite, the write lock)
            await other.commit()
        resp = await patch
        assert error_of(resp) == (409, "product_retired", "sku")
