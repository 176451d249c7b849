"""One OpenAPI document for the public API, merged from the services', and a docs page.

Each service's /openapi.json is fetched (with the internal credential) when the document
is first asked for and again after `openapi_ttl_s`; a service that does not answer is
listed under `x-missing-services` and the document is kept for 5 s only. Only /api/v1
paths are kept; schemas whose names clash between services are renamed `<service>_<name>`;
FastAPI's validation-error schema is replaced by the error body the services really send,
and every operation gets the API-key security and the gateway's own error answers.
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
import time
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from .proxy import GatewayState

PREFIX = "/api/v1"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERROR_SCHEMAS: dict[str, Any] = {
    "ErrorDetail": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable error code"},
            "message": {"type": "string"},
            "field": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    },
    "ErrorBody": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"$ref": "#/components/schemas/ErrorDetail"},
            "details": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
        },
    },
}
GATEWAY_ERRORS = {
    "401": "No API key, or an unknown or revoked one (`api_key_required`, `invalid_api_key`)",
    "403": "The key may not do this (`forbidden`, `not_your_outlet`, `not_your_supplier`, "
    "`not_your_leg`, `ownership_unverifiable`)",
    "413": "The body is larger than the limit (`payload_too_large`)",
    "429": "Too many requests for this key (`rate_limited`); see Retry-After",
    "502": "The service failed to answer (`bad_gateway`)",
    "503": "The service is unavailable (`upstream_unavailable`)",
    "504": "The service did not answer in time (`upstream_timeout`)",
}
DROPPED_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/schemas/"):
                name = v.rsplit("/", 1)[1]
                if name in DROPPED_SCHEMAS:
                    out[k] = ERROR_REF["$ref"]
                else:
                    out[k] = f"#/components/schemas/{renames.get(name, name)}"
            else:
                out[k] = _rewrite_refs(v, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def merge(docs: dict[str, dict[str, Any]], missing: list[str] | None = None) -> dict[str, Any]:
    """Merge service documents (name -> OpenAPI) into the gateway's public document."""
    schemas: dict[str, Any] = copy.deepcopy(ERROR_SCHEMAS)
    owner: dict[str, str] = {}
    paths: dict[str, Any] = {}
    for service, doc in docs.items():
        theirs = doc.get("components", {}).get("schemas", {})
        renames: dict[str, str] = {}
        for name, schema in theirs.items():
            if name in DROPPED_SCHEMAS:
                continue
            if name in schemas and schemas[name] != schema:
                renames[name] = f"{service}_{name}"
        for name, schema in theirs.items():
            if name in DROPPED_SCHEMAS:
                continue
            target = renames.get(name, name)
            schemas[target] = _rewrite_refs(schema, renames)
            owner.setdefault(target, service)
        for path, item in doc.get("paths", {}).items():
            if not path.startswith(PREFIX + "/"):
                continue
            item = _rewrite_refs(item, renames)
            for method in METHODS:
                op = item.get(method)
                if not isinstance(op, dict):
                    continue
                op.setdefault("tags", [service])
                op["operationId"] = f"{service}_{op.get('operationId', method + path)}"
                responses = op.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = _error_response(
                        "Invalid request: the `field` says which (`unknown_field`, `required`, ...)"
                    )
                for status, text in GATEWAY_ERRORS.items():
                    responses.setdefault(status, _error_response(text))
                responses.setdefault("4XX", _error_response("Any other refusal"))
                responses.setdefault("5XX", _error_response("Any other failure"))
            paths[path] = item
    paths[f"{PREFIX}/events/stream"] = {
        "get": {
            "tags": ["gateway"],
            "summary": "Live events (server-sent events)",
            "description": "Events from every service as they happen, for the ops dashboard. "
            "Ops and admin keys see everything; an outlet key its own outlet's events.",
            "operationId": "gateway_event_stream",
            "parameters": [
                {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                for n in ("type", "outlet", "correlation_id")
            ]
            + [
                {
                    "name": "replay",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 500},
                }
            ],
            "responses": {
                "200": {
                    "description": "A stream of `data: <event JSON>` messages",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **{s: _error_response(t) for s, t in GATEWAY_ERRORS.items() if s < "500"},
                "4XX": _error_response("Any other refusal"),
            },
        }
    }
    paths[f"{PREFIX}/me"] = {
        "get": {
            "tags": ["gateway"],
            "summary": "Who this key speaks for",
            "description": "The key's id, role (admin, ops, outlet, supplier) and, for an "
            "outlet or supplier key, whose it is. Answered by the gateway alone.",
            "operationId": "gateway_me",
            "responses": {
                "200": {
                    "description": "The key's identity",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["key_id", "role", "subject"],
                                "properties": {
                                    "key_id": {"type": "string"},
                                    "role": {
                                        "type": "string",
                                        "enum": ["admin", "ops", "outlet", "supplier"],
                                    },
                                    "subject": {"type": ["string", "null"]},
                                },
                            }
                        }
                    },
                },
                **{s: _error_response(t) for s, t in GATEWAY_ERRORS.items() if s in ("401", "429")},
                "4XX": _error_response("Any other refusal"),
            },
        }
    }
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Jejaring public API",
            "version": "1.0.0",
            "description": "Every route through the gateway, under /api/v1. Send an API key "
            "as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Errors are JSON "
            "`{error: {code, message, field}}` with a stable code.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
    }
    if missing:
        merged["x-missing-services"] = missing
    return merged


class OpenApiCache:
    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.expires = 0.0
        self.lock = asyncio.Lock()

    async def get(self, state: GatewayState) -> dict[str, Any]:
        if self.doc is not None and time.monotonic() < self.expires:
            return self.doc
        async with self.lock:
            if self.doc is not None and time.monotonic() < self.expires:
                return self.doc
            docs, missing = await fetch_all(state)
            self.doc = merge(docs, missing)
            ttl = 5.0 if missing else state.settings.openapi_ttl_s
            self.expires = time.monotonic() + ttl
            return self.doc


async def fetch_all(state: GatewayState) -> tuple[dict[str, dict[str, Any]], list[str]]:
    async def one(name: str, url: str) -> dict[str, Any] | None:
        try:
            resp = await state.client.get(f"{url}/openapi.json", timeout=5.0)
            if resp.status_code == 200:
                body: dict[str, Any] = resp.json()
                return body
        except (httpx.HTTPError, ValueError):
            pass
        return None

    services = state.settings.services()
    results = await asyncio.gather(*(one(n, u) for n, u in services.items()))
    docs = {n: d for n, d in zip(services, results, strict=True) if d is not None}
    missing = [n for n, d in zip(services, results, strict=True) if d is None]
    return docs, missing


async def openapi_json(request: Request) -> JSONResponse:
    cache: OpenApiCache = request.app.state.openapi
    return JSONResponse(await cache.get(request.app.state.gateway))


async def docs_page(request: Request) -> HTMLResponse:
    """A self-contained reference page (no scripts from elsewhere: it works offline)."""
    cache: OpenApiCache = request.app.state.openapi
    doc = await cache.get(request.app.state.gateway)
    rows: list[str] = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params = ", ".join(
                f"{p['name']} ({p['in']})" for p in op.get("parameters", []) if "name" in p
            )
            body = op.get("requestBody", {}).get("content", {})
            body_text = ", ".join(
                f"{ct}: {json.dumps(v.get('schema', {}))[:120]}" for ct, v in body.items()
            )
            codes = " ".join(sorted(op.get("responses", {})))
            rows.append(
                "<tr>"
                f"<td><code class='m {method}'>{method.upper()}</code></td>"
                f"<td><code>{html.escape(path)}</code><br><small>"
                f"{html.escape(op.get('summary', ''))}</small></td>"
                f"<td>{html.escape(', '.join(op.get('tags', [])))}</td>"
                f"<td><small>{html.escape(params)}</small></td>"
                f"<td><small>{html.escape(body_text)}</small></td>"
                f"<td><small>{html.escape(codes)}</small></td>"
                "</tr>"
            )
    missing = doc.get("x-missing-services")
    warn = (
        f"<p class='warn'>Not reachable now, so not listed: {html.escape(', '.join(missing))}</p>"
        if missing
        else ""
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Jejaring API</title><style>
body{{font-family:system-ui,sans-serif;margin:1rem;color:#1d2a33}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.3rem;
vertical-align:top;text-align:left}}code.m{{font-weight:bold}}.get{{color:#1565c0}}
.post{{color:#2e7d32}}.patch,.put{{color:#ef6c00}}.delete{{color:#c62828}}.warn{{color:#c62828}}
</style></head><body><h1>Jejaring public API</h1>
<p>{html.escape(doc["info"]["description"])}</p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Ops dashboard:
<a href="/dashboard/">/dashboard/</a>.</p>{warn}
<table><thead><tr><th>method</th><th>path</th><th>service</th><th>parameters</th>
<th>body</th><th>answers</th></tr></thead><tbody>{"".join(rows)}</tbody></table></body></html>"""
    return HTMLResponse(page)
