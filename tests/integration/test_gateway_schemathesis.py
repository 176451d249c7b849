"""Must-show: property-based requests (schemathesis) against the gateway's merged OpenAPI
document: no 5xx, and every answer matches the schema the document gives for its status.

The gateway is served over real HTTP (uvicorn, in-process) in front of the real services;
schemathesis' synchronous client runs in a worker thread so the event loop keeps serving.
Bounded: a few examples per operation, so the whole run takes well under two minutes.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from support.gateway import gateway_stack, serving

MAX_EXAMPLES = 8
SKIP = {"/api/v1/events/stream"}  # an endless stream; covered by the browser test
KNOWN_SERVICE_BUGS: set[str] = set()
"""Failures found in a service (not the gateway), reported and tolerated until fixed."""


def run_schemathesis(doc: dict[str, Any], base: str, key: str) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    calls = 0
    headers = {"authorization": f"Bearer {key}"}
    for result in schema.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]
        if op.path in SKIP:
            continue

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=op.as_strategy())
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=base, headers=headers, timeout=30)
            case.validate_response(
                response,
                checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
                headers=headers,
            )

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    return calls, failures


async def test_merged_openapi_holds_under_generated_requests(
    tmp_path: Path, kafka_broker: Any
) -> None:
    async with gateway_stack(
        tmp_path, str(kafka_broker.bootstrap_servers), rate_per_s=100_000, rate_burst=100_000
    ) as gw:
        # Something for the generated requests to find.
        await gw.call("admin", "POST", "/api/v1/outlets", json={"id": "o-1", "name": "Mart"})
        await gw.call(
            "admin", "POST", "/api/v1/products", json={"sku": "S-1", "name": "Gula", "unit": "kg"}
        )
        doc = (await gw.call("admin", "GET", "/openapi.json")).json()
        assert not doc.get("x-missing-services")
        async with serving(gw.app) as base:
            started = time.monotonic()
            calls, failures = await asyncio.to_thread(
                run_schemathesis, doc, base, await gw.key("admin")
            )
            took = time.monotonic() - started
        assert calls > 100, calls
        known = [f for f in failures if f.split(":", 1)[0] in KNOWN_SERVICE_BUGS]
        for failure in known:
            warnings.warn(f"known service bug: {failure.splitlines()[0]}", stacklevel=1)
        new = [f for f in failures if f not in known]
        summary = "\n".join(f.splitlines()[0] for f in new)
        assert not new, summary + "\n\n" + "\n\n".join(new)
        # How long it took is reported, not judged: speed is the benchmarks' business.
        print(f"schemathesis: {calls} calls in {took:.1f} s")
