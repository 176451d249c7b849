"""The gateway in front of the real services: keys, routing, request ids, limits, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from jejaring_gateway.config import GatewaySettings
from jejaring_gateway.entrypoints.app import create_app as create_gateway
from support.gateway import TOKEN, gateway_stack


def bootstrap(kafka_broker: Any) -> str:
    return str(kafka_broker.bootstrap_servers)


async def test_keys_routing_request_ids_and_errors(tmp_path: Path, kafka_broker: Any) -> None:
    async with gateway_stack(
        tmp_path, bootstrap(kafka_broker), ("catalog", "stock", "supplier"), max_page_size=50
    ) as gw:
        # No key, a malformed key, an unknown key: 401 JSON with a stable code.
        resp = await gw.client.get("/api/v1/products")
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "api_key_required"
        assert resp.headers["x-request-id"]
        resp = await gw.client.get("/api/v1/products", headers={"x-api-key": "nope"})
        assert resp.json()["error"]["code"] == "invalid_api_key"
        fake = "jk_0123456789ab_" + "x" * 43
        resp = await gw.client.get("/api/v1/products", headers={"x-api-key": fake})
        assert resp.status_code == 401

        # Admin writes the catalog through the gateway; the request id is passed through.
        resp = await gw.call(
            "admin",
            "POST",
            "/api/v1/products",
            json={"sku": "BERAS-5", "name": "Beras 5 kg", "unit": "sak"},
            headers={"x-request-id": "req-123"},
        )
        assert resp.status_code == 201, resp.text
        assert resp.headers["x-request-id"] == "req-123"
        # X-API-Key works as well as a bearer token; a generated id comes back otherwise.
        resp = await gw.client.get(
            "/api/v1/products/BERAS-5", headers={"x-api-key": await gw.key("ops")}
        )
        assert resp.status_code == 200 and resp.json()["sku"] == "BERAS-5"
        assert len(resp.headers["x-request-id"]) == 32

        # Page sizes are capped: limit=500 becomes the gateway's cap.
        resp = await gw.call("ops", "GET", "/api/v1/products", params={"limit": 500})
        assert resp.status_code == 200 and resp.json()["limit"] == 50

        # Routing: stock, supplier; an unknown prefix is 404 from the gateway itself.
        resp = await gw.call("admin", "POST", "/api/v1/outlets", json={"id": "o-1", "name": "M"})
        assert resp.status_code == 201, resp.text
        assert (await gw.call("ops", "GET", "/api/v1/outlets/o-1/stock")).status_code == 200
        assert (await gw.call("ops", "GET", "/api/v1/suppliers")).status_code == 200
        resp = await gw.call("ops", "GET", "/api/v1/nothing-here")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "route_not_found"

        # The service's own errors come back as they are (JSON, stable code).
        resp = await gw.call("ops", "GET", "/api/v1/products/NOPE")
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "product_not_found"

        # Transfer is not running here: 503 JSON, not a hang or a 500.
        resp = await gw.call("ops", "GET", "/api/v1/kpis")
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "upstream_unavailable"

        # Relative or encoded path tricks are refused before any routing.
        for path in ("/api/v1/outlets/o-1/../o-2/stock", "/api/v1/outlets/o-1%2F..%2Fo-2"):
            resp = await gw.call("outlet:o-1", "GET", path)
            assert resp.status_code in (400, 403, 404), (path, resp.status_code)

        # The services themselves refuse calls without the internal credential...
        catalog = httpx.ASGITransport(app=gw.services["catalog"])
        async with httpx.AsyncClient(transport=catalog, base_url="http://c") as direct:
            resp = await direct.get("/api/v1/products")
            assert resp.status_code == 401
            assert resp.json()["error"]["code"] == "internal_credential_required"
            resp = await direct.get("/api/v1/products", headers={"x-internal-token": "wrong"})
            assert resp.status_code == 401
            ok = await direct.get("/api/v1/products", headers={"x-internal-token": TOKEN})
            assert ok.status_code == 200
            # ...except health, readiness, metrics and the event catalog.
            for path in ("/healthz", "/metrics", "/asyncapi.json"):
                assert (await direct.get(path)).status_code == 200, path


async def test_revoked_key_stops_working(tmp_path: Path, kafka_broker: Any) -> None:
    async with gateway_stack(
        tmp_path, bootstrap(kafka_broker), ("catalog",), key_cache_s=0.2
    ) as gw:
        key = await gw.key("ops")
        assert (await gw.call("ops", "GET", "/api/v1/products")).status_code == 200
        assert await gw.keys.revoke(key.split("_")[1])
        await asyncio.sleep(0.3)
        resp = await gw.call("ops", "GET", "/api/v1/products")
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path, kafka_broker: Any) -> None:
    async with gateway_stack(
        tmp_path, bootstrap(kafka_broker), ("catalog",), rate_per_s=5, rate_burst=5
    ) as gw:
        statuses = [(await gw.call("ops", "GET", "/api/v1/clusters")) for _ in range(8)]
        codes = [r.status_code for r in statuses]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        limited = next(r for r in statuses if r.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        # Another key has its own bucket.
        assert (await gw.call("admin", "GET", "/api/v1/clusters")).status_code == 200
        # The gateway's own metrics count the early 429s next to the proxied answers.
        scrape = (await gw.client.get("/metrics")).text
        assert (
            'jejaring_gateway_requests_total{method="GET",resource="clusters",status="429"}'
            in scrape
        )
        assert (
            'jejaring_gateway_requests_total{method="GET",resource="clusters",status="200"} 6.0'
            in scrape
        )


class _Failing(httpx.AsyncBaseTransport):
    """An upstream whose client code fails in a way the proxy does not expect."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("boom")


async def test_an_unexpected_failure_is_a_json_500_and_is_counted(tmp_path: Path) -> None:
    """Proxied requests skip FastAPI's stack (GatewayApp.proxied): its last-resort error
    handling must still hold there."""
    settings = GatewaySettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/gateway.db")
    app = create_gateway(settings, transport=_Failing())
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        keys = app.state.gateway.keys
        _record, key = await keys.issue("ops", None, "test")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            resp = await client.get(
                "/api/v1/products", headers={"x-api-key": key, "x-request-id": "r-500"}
            )
            assert resp.status_code == 500
            assert resp.json()["error"]["code"] == "internal_error"
            assert resp.headers["x-request-id"] == "r-500"
            scrape = (await client.get("/metrics")).text
    assert (
        'jejaring_gateway_requests_total{method="GET",resource="products",status="500"} 1.0'
        in scrape
    )


async def test_a_key_store_outage_is_a_503_as_on_fastapis_path(tmp_path: Path) -> None:
    """The proxy's shortcut answers with the app's own handlers: a database error while
    checking a key is 503 `database_unavailable`, as the services answer one."""
    settings = GatewaySettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/gateway.db")
    app = create_gateway(settings, transport=_Failing())
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        keys = app.state.gateway.keys
        _record, key = await keys.issue("ops", None, "test")

        async def down(_token: str) -> None:
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is down"))

        keys.authenticate = down
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            resp = await client.get("/api/v1/products", headers={"x-api-key": key})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "database_unavailable"


async def test_an_ownership_check_transfer_cannot_answer_is_told_as_it_is(
    tmp_path: Path,
) -> None:
    """An outlet's leg and request routes ask transfer who owns them first. Transfer
    failing (503, 500) is the gateway's 503/502, which clients retry, not a 403 they would
    take for a refusal; transfer's own 4xx (a malformed id) passes through. Only an answer
    the gateway cannot read stays closed."""
    answers = {
        "l-down": httpx.Response(
            503, json={"error": {"code": "database_unavailable", "message": "down", "field": None}}
        ),
        "l-boom": httpx.Response(500, text="Internal Server Error"),
        "l-bad": httpx.Response(
            422, json={"error": {"code": "invalid", "message": "too long", "field": "leg_id"}}
        ),
        "l-odd": httpx.Response(200, json={"unexpected": True}),
        "rq-down": httpx.Response(503, json={"error": {"code": "database_unavailable"}}),
        # The gateway's own internal credential refused: not the outlet key's fault.
        "l-cred": httpx.Response(401, json={"error": {"code": "internal_credential_required"}}),
    }
    forwarded: list[str] = []

    def transfer(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        if request.method == "GET" and name in answers:
            return answers[name]
        forwarded.append(request.url.path)
        return httpx.Response(200, json={})

    settings = GatewaySettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/gateway.db")
    app = create_gateway(settings, transport=httpx.MockTransport(transfer))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        _record, key = await app.state.gateway.keys.issue("outlet", "o-1", "test")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers={"x-api-key": key}
        ) as client:
            got = {}
            for path in (
                "/api/v1/transfers/l-down/dispatch",
                "/api/v1/transfers/l-boom/receive",
                "/api/v1/transfers/l-bad/dispatch",
                "/api/v1/transfers/l-odd/dispatch",
                "/api/v1/transfers/l-cred/dispatch",
                "/api/v1/restock-requests/rq-down/cancel",
            ):
                resp = await client.post(path, json={})
                got[path.split("/")[4]] = (resp.status_code, resp.json()["error"]["code"])
    assert got == {
        "l-down": (503, "upstream_unavailable"),
        "l-boom": (502, "bad_gateway"),
        "l-bad": (422, "invalid"),
        "l-odd": (403, "ownership_unverifiable"),
        "l-cred": (502, "bad_gateway"),
        "rq-down": (503, "upstream_unavailable"),
    }
    assert forwarded == []  # nothing was done on an unchecked leg


async def test_an_address_sending_unknown_keys_is_slowed_down(tmp_path: Path) -> None:
    """Every unknown key costs a key-store read, and had no limit: past a burst of them,
    the address gets 429 until it slows down (a known key is limited by its own id)."""
    settings = GatewaySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
        failed_key_rate_per_s=0.001,
        failed_key_burst=3,
    )
    app = create_gateway(settings, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        _record, key = await app.state.gateway.keys.issue("ops", None, "test")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            got = []
            for i in range(5):
                resp = await client.get(
                    "/api/v1/products", headers={"x-api-key": f"jk_{i:012d}_" + "x" * 43}
                )
                got.append((resp.status_code, resp.json()["error"]["code"]))
            assert got == [(401, "invalid_api_key")] * 3 + [(429, "too_many_unknown_keys")] * 2
            assert int(resp.headers["retry-after"]) >= 1
            # In parallel, too: each lookup takes its token before the key store is read,
            # so a burst from a fresh address cannot all slip past before a failure counts.
            fresh = httpx.ASGITransport(
                app=app, raise_app_exceptions=False, client=("10.0.0.7", 1234)
            )
            async with httpx.AsyncClient(transport=fresh, base_url="http://gw") as client3:
                burst = await asyncio.gather(
                    *(
                        client3.get(
                            "/api/v1/products", headers={"x-api-key": f"jk_{i:012d}_" + "y" * 43}
                        )
                        for i in range(5)
                    )
                )
            assert sorted(r.status_code for r in burst) == [401] * 3 + [429] * 2
            # Another address is not held up.
            other = httpx.ASGITransport(
                app=app, raise_app_exceptions=False, client=("10.0.0.9", 1234)
            )
            async with httpx.AsyncClient(transport=other, base_url="http://gw") as client2:
                resp = await client2.get("/api/v1/products", headers={"x-api-key": key})
                assert resp.status_code == 200, resp.text
