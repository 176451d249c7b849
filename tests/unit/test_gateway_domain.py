"""The gateway's pure parts: keys, access rules, token buckets, the merged OpenAPI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.requests import Request

from jejaring_gateway.adapters.events import Filters
from jejaring_gateway.api.docs import merge
from jejaring_gateway.api.errors import GatewayError
from jejaring_gateway.api.proxy import _query
from jejaring_gateway.config import GatewaySettings
from jejaring_gateway.domain.access import Check, count_of, decide, is_slow, owner, segments
from jejaring_gateway.domain.identity import (
    InvalidRole,
    Principal,
    hash_secret,
    new_key,
    parse_role,
    secret_matches,
    split_key,
)
from jejaring_gateway.domain.ratelimit import RateLimiter
from jejaring_shared.app import create_service_app
from support import probe

OUTLET = Principal("k1", "outlet", "o-1")
SUPPLIER = Principal("k2", "supplier", "sup_1")
OPS = Principal("k3", "ops")
ADMIN = Principal("k4", "admin")


def allowed(p: Principal, method: str, path: str) -> bool:
    return decide(p, method, segments(path)).allowed


def test_keys_are_random_hashed_and_parsed() -> None:
    key_id, secret, token = new_key()
    assert split_key(token) == (key_id, secret)
    assert secret_matches(secret, hash_secret(secret))
    assert not secret_matches(secret + "x", hash_secret(secret))
    assert split_key("jk_short_x") is None and split_key("Bearer x") is None
    assert new_key()[2] != token
    assert parse_role("outlet:o-1") == ("outlet", "o-1")
    assert parse_role("ops") == ("ops", None)
    for bad in ("outlet", "supplier:", "ops:1", "root", "outlet:a b"):
        with pytest.raises(InvalidRole):
            parse_role(bad)


def test_routes_go_to_their_owner() -> None:
    assert owner(segments("/api/v1/products:import")) == "catalog"
    assert owner(segments("/api/v1/outlets/o-1/stock")) == "stock"
    assert owner(segments("/api/v1/pareto")) == "stock"
    assert owner(segments("/api/v1/restock-requests/r1")) == "transfer"
    assert owner(segments("/api/v1/rebalancing/plans")) == "transfer"
    assert owner(segments("/api/v1/suppliers/s/offers")) == "supplier"
    assert owner(segments("/api/v1/unknown")) is None


def test_long_calls_get_the_long_timeout() -> None:
    assert is_slow("POST", segments("/api/v1/products:import"))
    assert is_slow("POST", segments("/api/v1/outlets/o-1/opening-stock"))
    assert is_slow("POST", segments("/api/v1/rebalancing/plans/plan-1/approve"))
    assert not is_slow("POST", segments("/api/v1/rebalancing/plans/plan-1/reject"))
    assert is_slow("POST", segments("/api/v1/rebalancing/plans"))
    assert not is_slow("GET", segments("/api/v1/rebalancing/plans"))
    assert not is_slow("POST", segments("/api/v1/restock-requests"))


def test_outlet_keys_reach_their_own_outlet_only() -> None:
    assert allowed(OUTLET, "GET", "/api/v1/outlets/o-1/stock")
    assert allowed(OUTLET, "POST", "/api/v1/outlets/o-1/sales")
    assert not allowed(OUTLET, "GET", "/api/v1/outlets/o-2/stock")
    assert not allowed(OUTLET, "POST", "/api/v1/outlets/o-2/sales")
    assert not allowed(OUTLET, "GET", "/api/v1/outlets")
    assert not allowed(OUTLET, "PATCH", "/api/v1/outlets/o-1")  # status is ops' to change
    assert not allowed(OUTLET, "POST", "/api/v1/outlets/o-1/reservations")
    assert allowed(OUTLET, "GET", "/api/v1/products")
    assert not allowed(OUTLET, "POST", "/api/v1/products")
    assert not allowed(OUTLET, "GET", "/api/v1/suppliers/sup_1")
    assert decide(OUTLET, "POST", segments("/api/v1/restock-requests")).check is Check.RESTOCK_BODY
    listing = decide(OUTLET, "GET", segments("/api/v1/restock-requests"))
    assert listing.force_query == {"outlet_id": "o-1"}
    assert decide(OUTLET, "GET", segments("/api/v1/kpis")).force_query == {"outlet_id": "o-1"}
    assert (
        decide(OUTLET, "POST", segments("/api/v1/transfers/l1/dispatch")).check is Check.LEG_SOURCE
    )
    assert (
        decide(OUTLET, "POST", segments("/api/v1/transfers/l1/receive")).check
        is Check.LEG_DESTINATION
    )
    assert not allowed(OUTLET, "POST", "/api/v1/rebalancing/plans")


def test_supplier_ops_and_admin() -> None:
    assert allowed(SUPPLIER, "POST", "/api/v1/suppliers/sup_1/assignments/l1/accept")
    assert not allowed(SUPPLIER, "GET", "/api/v1/suppliers/sup_2/assignments")
    assert not allowed(SUPPLIER, "GET", "/api/v1/suppliers")
    assert not allowed(SUPPLIER, "GET", "/api/v1/outlets/o-1/stock")
    assert allowed(OPS, "GET", "/api/v1/outlets/o-1/stock")
    assert allowed(OPS, "POST", "/api/v1/rebalancing/plans/p1/approve")
    assert not allowed(OPS, "POST", "/api/v1/outlets")
    assert not allowed(OPS, "DELETE", "/api/v1/products/x")
    assert allowed(ADMIN, "DELETE", "/api/v1/anything/at/all")


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # keys do not share
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    assert RateLimiter.retry_after(0.01) == 1


def test_merge_keeps_api_paths_renames_clashes_and_uses_the_real_error_body() -> None:
    def doc(schema: dict[str, object]) -> dict[str, object]:
        return {
            "paths": {
                "/healthz": {"get": {"responses": {}}},
                "/api/v1/x": {
                    "get": {
                        "operationId": "x",
                        "responses": {
                            "200": {
                                "content": {
                                    "application/json": {
                                        "schema": {"$ref": "#/components/schemas/Thing"}
                                    }
                                }
                            },
                            "422": {
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "$ref": "#/components/schemas/HTTPValidationError"
                                        }
                                    }
                                }
                            },
                        },
                    }
                },
            },
            "components": {"schemas": {"Thing": schema, "HTTPValidationError": {}}},
        }

    merged = merge({"a": doc({"type": "object"}), "b": doc({"type": "string"})}, ["c"])
    assert "/healthz" not in merged["paths"]
    schemas = merged["components"]["schemas"]
    assert schemas["Thing"] == {"type": "object"} and schemas["b_Thing"] == {"type": "string"}
    assert "HTTPValidationError" not in schemas and "ErrorBody" in schemas
    op = merged["paths"]["/api/v1/x"]["get"]
    assert op["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert {"401", "403", "429", "503"} <= set(op["responses"])
    assert merged["x-missing-services"] == ["c"]
    assert "apiKey" in merged["components"]["securitySchemes"]


async def test_internal_credential_guards_every_service_route(tmp_path: Path) -> None:
    settings = probe.settings(
        f"sqlite+aiosqlite:///{tmp_path}/p.db", "127.0.0.1:1", internal_token="s3cret-token"
    )
    app = create_service_app(probe.definition(), settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            resp = await c.post("/things", json=[])
            assert resp.status_code == 401
            assert resp.json()["error"]["code"] == "internal_credential_required"
            bad = await c.post("/things", json=[], headers={"x-internal-token": "nope"})
            assert bad.status_code == 401
            good = await c.post("/things", json=[], headers={"x-internal-token": "s3cret-token"})
            assert good.status_code != 401
            for path in ("/healthz", "/readyz", "/metrics", "/asyncapi.json"):
                assert (await c.get(path)).status_code != 401, path


def test_internal_token_is_read_from_the_shared_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from jejaring_catalog.config import CatalogSettings
    from jejaring_gateway.config import GatewaySettings

    assert CatalogSettings().internal_token is None
    monkeypatch.setenv("JEJARING_INTERNAL_TOKEN", "shared-one")
    token = CatalogSettings().internal_token
    assert token is not None and token.get_secret_value() == "shared-one"
    gw_token = GatewaySettings().internal_token
    assert gw_token is not None and gw_token.get_secret_value() == "shared-one"
    assert "shared-one" not in repr(CatalogSettings())


def test_the_key_is_read_from_x_api_key_first_then_a_bearer_token() -> None:
    from jejaring_gateway.api.proxy import token_of

    bearer = (b"authorization", b"Bearer  jk_abc ")
    assert token_of([bearer]) == "jk_abc"
    assert token_of([bearer, (b"x-api-key", b"jk_key")]) == "jk_key"
    assert token_of([(b"authorization", b"Basic dXNlcg==")]) is None
    assert token_of([(b"authorization", b"Bearer ")]) == ""  # present but empty: a 401
    assert token_of([]) is None


def test_an_outlets_live_events_are_found_by_their_payload_not_their_key() -> None:
    """Outlet ids may contain `:`: the events of `bali:ubud` (key `bali:ubud:rice`) are not
    `bali`'s, and `bali` gets its own."""

    def level(outlet_id: str) -> dict[str, object]:
        return {
            "type": "stock.level_changed",
            "source": "stock",
            "key": f"{outlet_id}:rice",
            "payload": {"outlet_id": outlet_id, "sku": "rice", "available": 3},
        }

    bali = Filters.parse(None, "bali", None)
    assert not bali.matches(level("bali:ubud"))
    assert bali.matches(level("bali"))
    assert Filters.parse(None, "bali:ubud", None).matches(level("bali:ubud"))
    transfer = {
        "type": "transfer.leg_reserved",
        "payload": {"source_kind": "outlet", "source_id": "bali", "outlet_id": "ubud"},
    }
    assert bali.matches(transfer)


def test_a_supplier_leg_is_not_on_the_stream_of_an_outlet_sharing_the_suppliers_id() -> None:
    """Supplier and outlet ids share one pattern: supplier `kopi-jaya`'s legs to other
    outlets are not the business of an outlet called `kopi-jaya`."""
    leg = {
        "type": "transfer.leg_received",  # a supplier leg's transition
        "payload": {"source_kind": "supplier", "source_id": "kopi-jaya", "outlet_id": "ubud"},
    }
    assert not Filters.parse(None, "kopi-jaya", None).matches(leg)
    assert Filters.parse(None, "ubud", None).matches(leg)


def test_counts_are_ascii_digits_of_sensible_length() -> None:
    """`str.isdigit` takes "²", which `int` refuses: the gateway answered 500 to
    `?limit=²` and `?replay=²`."""
    assert count_of("42") == 42 and count_of("0") == 0
    assert count_of("²") is None and count_of("٣") is None and count_of("-1") is None
    assert count_of("9" * 5000) is None and count_of(None) is None and count_of("") is None
    assert count_of("11", most=10) is None


def test_a_page_size_in_unicode_digits_is_a_422_on_its_field() -> None:
    settings = GatewaySettings(database_url="sqlite+aiosqlite://")
    # Also what the services' parser takes but the cap below did not see as a number
    # ("+500", "500.0", "5_00"), or as `limit` at all (`li%6Dit`).
    for raw, field in (
        (b"limit=%C2%B2", "limit"),
        (b"offset=" + b"1" * 20, "offset"),
        (b"limit=%2B500", "limit"),
        (b"limit=500.0", "limit"),
        (b"limit=5_00", "limit"),
        (b"li%6Dit=%20500", "limit"),
    ):
        request = Request({"type": "http", "query_string": raw, "headers": []})
        with pytest.raises(GatewayError) as caught:
            _query(request, settings, {})
        assert (caught.value.status, caught.value.field) == (422, field)
    capped = Request({"type": "http", "query_string": b"limit=500&x=1", "headers": []})
    assert _query(capped, settings, {}) == f"limit={settings.max_page_size}&x=1"
    hidden = Request({"type": "http", "query_string": b"li%6Dit=500", "headers": []})
    assert _query(hidden, settings, {}) == f"limit={settings.max_page_size}"
