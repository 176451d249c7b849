"""Must-show: the access matrix. Every public endpoint that takes an object id, called with
outlet A's key on outlet B's objects and supplier A's key on supplier B's: never 2xx.
The gateway runs in-process in front of the real services (catalog, stock, transfer,
supplier); the endpoint list is the gateway's merged OpenAPI document, so a route added
to a service later is covered without changing this test.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from support.gateway import GatewayStack, gateway_stack

OWNED_PARAMS = {"outlet_id", "supplier_id", "request_id", "leg_id", "offer_id"}
SKU = "GULA-1"


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _world(gw: GatewayStack) -> dict[str, Any]:
    """Two outlets and two suppliers, each with objects of its own, made through the API."""
    ok = {200, 201, 202}
    r = await gw.call(
        "admin", "POST", "/api/v1/products", json={"sku": SKU, "name": "Gula 1 kg", "unit": "kg"}
    )
    assert r.status_code in ok, r.text
    w: dict[str, Any] = {"oA": _uid("oa"), "oB": _uid("ob")}
    for o in (w["oA"], w["oB"]):
        r = await gw.call("admin", "POST", "/api/v1/outlets", json={"id": o, "name": o})
        assert r.status_code in ok, r.text
    # Only B holds stock: A must not become the donor of B's leg (a leg's source outlet may
    # read it, and the matrix checks that A may not).
    for o in (w["oB"],):
        r = await gw.call(
            f"outlet:{o}",
            "POST",
            f"/api/v1/outlets/{o}/receipts",
            json={
                "idempotency_key": "r1",
                "sku": SKU,
                "quantity": 40,
                "source": "distribution_center",
            },
        )
        assert r.status_code in ok, r.text
    for name in ("sA", "sB"):
        r = await gw.call(
            "admin", "POST", "/api/v1/suppliers", json={"name": name, "kind": "small_producer"}
        )
        assert r.status_code in ok, r.text
        w[name] = r.json()["id"]
    r = await gw.call(
        f"supplier:{w['sB']}",
        "POST",
        f"/api/v1/suppliers/{w['sB']}/offers",
        json={"sku": SKU, "quantity": 10, "unit_price": 12000, "lead_time_hours": 24},
    )
    # The supplier's catalog projection fills from Kafka; an offer may need a moment.
    w["offerB"] = r.json()["id"] if r.status_code in ok else "off_unknown"
    r = await gw.call(
        f"outlet:{w['oB']}",
        "POST",
        "/api/v1/restock-requests",
        json={"outlet_id": w["oB"], "sku": SKU, "quantity": 5},
    )
    assert r.status_code == 202, r.text
    w["reqB"] = r.json()["id"]
    detail = (await gw.call("admin", "GET", f"/api/v1/restock-requests/{w['reqB']}")).json()
    w["legB"] = detail["legs"][0]["id"] if detail.get("legs") else "leg-unknown"
    return w


def _fill(path: str, w: dict[str, Any]) -> str:
    values = {
        "outlet_id": w["oB"],
        "supplier_id": w["sB"],
        "request_id": w["reqB"],
        "leg_id": w["legB"],
        "offer_id": w["offerB"],
        "sku": SKU,
        "period": "2025-01",
    }
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), "x")), path)


async def test_access_matrix_never_2xx_on_anothers_objects(
    tmp_path: Path, kafka_broker: Any
) -> None:
    async with gateway_stack(tmp_path, str(kafka_broker.bootstrap_servers)) as gw:
        w = await _world(gw)
        doc = (await gw.call("admin", "GET", "/openapi.json")).json()
        assert not doc.get("x-missing-services"), doc.get("x-missing-services")
        checked: list[tuple[str, str, str, int]] = []
        own_reads: list[tuple[str, int]] = []
        for template, item in doc["paths"].items():
            params = set(re.findall(r"\{(\w+)\}", template))
            if not params & OWNED_PARAMS:
                continue
            path = _fill(template, w)
            for method in ("get", "post", "put", "patch", "delete"):
                if method not in item:
                    continue
                body = {"outlet_id": w["oB"], "sku": SKU, "quantity": 1}
                kw: dict[str, Any] = {} if method == "get" else {"json": body}
                intruders = ["outlet:" + w["oA"], "supplier:" + w["sA"]]
                for role in intruders:
                    r = await gw.call(role, method.upper(), path, **kw)
                    checked.append((role.split(":")[0], method.upper(), template, r.status_code))
                    assert not 200 <= r.status_code < 300, (role, method, path, r.text)
                    assert r.status_code in (403, 404), (role, method, path, r.status_code)
                # The rightful owner is let through (reads), so the refusals above are about
                # whose object it is, not a blanket refusal.
                if method == "get" and "leg_id" not in params:
                    owner_role = (
                        f"supplier:{w['sB']}" if "supplier_id" in params else f"outlet:{w['oB']}"
                    )
                    r = await gw.call(owner_role, "GET", path)
                    own_reads.append((template, r.status_code))
                    assert r.status_code == 200, (owner_role, path, r.text)
        covered = {t for _, _, t, _ in checked}
        assert any("/outlets/{outlet_id}" in t for t in covered)
        assert any("/suppliers/{supplier_id}" in t for t in covered)
        assert "/api/v1/restock-requests/{request_id}" in covered
        assert len(checked) >= 60, len(checked)
        assert len(own_reads) >= 10

        # Restock requests: one for another outlet is refused; another's is not listed.
        r = await gw.call(
            f"outlet:{w['oA']}",
            "POST",
            "/api/v1/restock-requests",
            json={"outlet_id": w["oB"], "sku": SKU, "quantity": 3},
        )
        assert r.status_code == 403 and r.json()["error"]["field"] == "outlet_id"
        # A duplicated key cannot smuggle another outlet past the check.
        raw = (
            f'{{"outlet_id": "{w["oA"]}", "outlet_id": "{w["oB"]}", "sku": "{SKU}", "quantity": 3}}'
        )
        r = await gw.call(
            f"outlet:{w['oA']}",
            "POST",
            "/api/v1/restock-requests",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 403, r.text
        listed = (await gw.call(f"outlet:{w['oA']}", "GET", "/api/v1/restock-requests")).json()
        assert all(x["outlet_id"] == w["oA"] for x in listed["requests"])
        listed = await gw.call(
            f"outlet:{w['oA']}", "GET", "/api/v1/restock-requests", params={"outlet_id": w["oB"]}
        )
        assert all(x["outlet_id"] == w["oA"] for x in listed.json()["requests"])
        # B's own request is still open: nothing the intruders sent changed it.
        mine = await gw.call(f"outlet:{w['oB']}", "GET", f"/api/v1/restock-requests/{w['reqB']}")
        assert mine.status_code == 200 and mine.json()["status"] not in ("cancelled",)

        # Ops reads everything but cannot write outside rebalancing; no key is 401.
        assert (await gw.call("ops", "GET", f"/api/v1/outlets/{w['oB']}/stock")).status_code == 200
        r = await gw.call("ops", "POST", "/api/v1/outlets", json={"id": "o-x", "name": "x"})
        assert r.status_code == 403
        assert (await gw.client.get(f"/api/v1/outlets/{w['oB']}")).status_code == 401
        # Events: suppliers may not watch the live stream.
        r = await gw.call(f"supplier:{w['sA']}", "GET", "/api/v1/events/stream")
        assert r.status_code == 403


async def test_unknown_and_server_owned_fields_are_refused_and_change_nothing(
    tmp_path: Path, kafka_broker: Any
) -> None:
    async with gateway_stack(tmp_path, str(kafka_broker.bootstrap_servers)) as gw:
        w = await _world(gw)
        before_products = (await gw.call("ops", "GET", "/api/v1/products")).json()["total"]
        before_moves = (await gw.call("ops", "GET", f"/api/v1/outlets/{w['oA']}/movements")).json()
        before_reqs = (await gw.call("ops", "GET", "/api/v1/restock-requests")).json()
        before_sups = (await gw.call("ops", "GET", "/api/v1/suppliers")).json()
        attempts = [
            (
                "admin",
                "/api/v1/products",
                {"sku": "X-1", "name": "x", "unit": "kg", "status": "retired"},
            ),
            (
                "admin",
                "/api/v1/products",
                {"sku": "X-2", "name": "x", "unit": "kg", "created_at": "2020-01-01T00:00:00Z"},
            ),
            (
                "admin",
                "/api/v1/products",
                {"sku": "X-3", "name": "x", "unit": "kg", "colour": "red"},
            ),
            (
                f"outlet:{w['oA']}",
                f"/api/v1/outlets/{w['oA']}/receipts",
                {
                    "idempotency_key": "k9",
                    "sku": SKU,
                    "quantity": 1,
                    "source": "distribution_center",
                    "on_hand": 999,
                },
            ),
            (
                f"outlet:{w['oA']}",
                f"/api/v1/outlets/{w['oA']}/sales",
                {
                    "lines": [
                        {
                            "idempotency_key": "s1",
                            "sku": SKU,
                            "quantity": 1,
                            "sold_at": "2025-01-01T00:00:00Z",
                            "price": 1,
                        }
                    ]
                },
            ),
            (
                f"outlet:{w['oA']}",
                "/api/v1/restock-requests",
                {"outlet_id": w["oA"], "sku": SKU, "quantity": 2, "status": "fulfilled"},
            ),
            (
                f"outlet:{w['oA']}",
                "/api/v1/restock-requests",
                {"outlet_id": w["oA"], "sku": SKU, "quantity": 2, "id": "req-mine"},
            ),
            ("admin", "/api/v1/suppliers", {"name": "n", "kind": "small_producer", "id": "sup_x"}),
            (
                f"supplier:{w['sA']}",
                f"/api/v1/suppliers/{w['sA']}/offers",
                {
                    "sku": SKU,
                    "quantity": 1,
                    "unit_price": 1,
                    "lead_time_hours": 1,
                    "status": "withdrawn",
                },
            ),
        ]
        for role, path, body in attempts:
            r = await gw.call(role, "POST", path, json=body)
            assert r.status_code == 422, (path, body, r.text)
            assert r.json()["error"]["code"] == "unknown_field", r.text
            assert r.json()["error"]["field"], r.text
        assert (await gw.call("ops", "GET", "/api/v1/products")).json()["total"] == before_products
        moves = (await gw.call("ops", "GET", f"/api/v1/outlets/{w['oA']}/movements")).json()
        assert moves == before_moves
        assert (await gw.call("ops", "GET", "/api/v1/restock-requests")).json() == before_reqs
        assert (await gw.call("ops", "GET", "/api/v1/suppliers")).json() == before_sups
