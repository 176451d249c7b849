"""The ops dashboard in headless Chromium (Debian's /usr/bin/chromium; never downloaded).

The gateway runs in-process over real HTTP (uvicorn) in front of the real services, with
its live-event consumer on a private broker. Events are published with a plain aiokafka
producer, the way the services' relays do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright

from jejaring_shared.contracts import Envelope
from support.gateway import gateway_stack, serving
from support.kafka_io import send_raw
from support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A fresh profile (user data dir) per test."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield browser
        finally:
            await browser.close()


def envelope(kind: str, outlet: str, correlation: str) -> Envelope:
    return Envelope(
        type=kind,
        source="transfer",
        key=correlation,
        correlation_id=correlation,
        payload={"request_id": correlation, "outlet_id": outlet, "sku": "GULA-1", "quantity": 5},
    )


async def publish(bootstrap: str, *events: Envelope) -> None:
    await send_raw(bootstrap, "transfer.events", [(e.key.encode(), e.to_bytes()) for e in events])


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(f"{base}/dashboard/")
    await page.fill("#key-input", key)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#stream-status[data-state=live]", timeout=10_000)


async def test_dashboard_live_events_filters_and_screenshot(
    tmp_path: Path, kafka_broker: Any
) -> None:
    bootstrap = str(kafka_broker.bootstrap_servers)
    async with (
        gateway_stack(tmp_path, bootstrap, events=True) as gw,
        serving(gw.app) as base,
        chromium(tmp_path) as browser,
    ):
        hub = gw.app.state.hub
        await wait_until(lambda: asyncio.sleep(0, hub.ready), 60, "the gateway's event consumer")
        # Some data so the overview has something true to show.
        await gw.call("admin", "POST", "/api/v1/outlets", json={"id": "o-web", "name": "Mart Web"})
        await gw.call("admin", "POST", "/api/v1/outlets", json={"id": "o-two", "name": "Mart Dua"})
        page = await browser.new_page()
        problems: list[str] = []

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type in ("error", "warning"):
                problems.append(f"{msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        await sign_in(page, base, await gw.key("ops"))
        await page.wait_for_selector("#kpis .tile")

        # A new transfer event appears within 2 seconds of being published.
        corr = f"req-{uuid.uuid4().hex[:8]}"
        first = envelope("transfer.request_opened", "o-web", corr)
        started = time.monotonic()
        await publish(bootstrap, first)
        await page.wait_for_selector(f'#events-list li[data-id="{first.id}"]', timeout=2_000)
        shown_after = time.monotonic() - started
        assert shown_after < 2.0, shown_after
        assert "transfer.request_opened" in await page.inner_text("#events-list")

        # Filters: by outlet, then by correlation id, then by type.
        await page.fill("#filter-outlet", "o-other")
        await page.click("#filters button[type=submit]")
        await page.wait_for_selector("#stream-status[data-state=live]")
        other = envelope("transfer.leg_assigned", "o-other", f"req-{uuid.uuid4().hex[:8]}")
        mine = envelope("transfer.leg_assigned", "o-web", corr)
        await publish(bootstrap, mine, other)
        await page.wait_for_selector(f'#events-list li[data-id="{other.id}"]', timeout=2_000)
        await asyncio.sleep(0.5)
        assert await page.query_selector(f'#events-list li[data-id="{mine.id}"]') is None

        await page.fill("#filter-outlet", "")
        await page.fill("#filter-correlation", corr)
        await page.click("#filters button[type=submit]")
        await page.wait_for_selector("#stream-status[data-state=live]")
        # The replay of recent events honours the filter: only this request's events.
        await page.wait_for_selector(f'#events-list li[data-id="{mine.id}"]', timeout=2_000)
        ids = await page.eval_on_selector_all(
            "#events-list li", "els => els.map(e => e.dataset.id)"
        )
        assert str(other.id) not in ids and str(first.id) in ids

        await page.fill("#filter-correlation", "")
        await page.fill("#filter-type", "transfer.leg_*")
        await page.click("#filters button[type=submit]")
        await page.wait_for_selector("#stream-status[data-state=live]")
        await page.wait_for_selector(f'#events-list li[data-id="{mine.id}"]', timeout=2_000)
        types = await page.eval_on_selector_all(
            "#events-list li", "els => els.map(e => e.dataset.type)"
        )
        assert types and all(x.startswith("transfer.leg_") for x in types), types

        # Language toggle: Indonesian by default, English on a click.
        assert await page.inner_text("#signout") == "Keluar"
        await page.click("#lang")
        assert await page.inner_text("#signout") == "Sign out"

        # Honest numbers: tiles without data say n/a or show real values, never made up.
        tiles = await page.inner_text("#kpis")
        kpis = (await gw.call("ops", "GET", "/api/v1/kpis")).json()
        if kpis.get("fill_rate") is None:
            assert "n/a" in tiles

        # The outlet page.
        await page.goto(f"{base}/dashboard/#outlet/o-web")
        await page.wait_for_function(
            "document.querySelector('#outlet-name').textContent.includes('Mart Web')"
        )
        # The live stream follows the outlet page: to the next outlet, and off on leaving.
        value = "document.querySelector('#filter-outlet').value"
        await page.wait_for_function(f"{value} === 'o-web'")
        await page.goto(f"{base}/dashboard/#outlet/o-two")
        await page.wait_for_function(f"{value} === 'o-two'")

        ARTIFACTS.mkdir(exist_ok=True)
        await page.goto(f"{base}/dashboard/#overview")
        await page.wait_for_function(f"{value} === ''")
        await page.wait_for_selector("#kpis .tile")
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        phone = await browser.new_page()
        await phone.set_viewport_size({"width": 390, "height": 844})
        phone.on("console", on_console)
        await phone.goto(f"{base}/dashboard/")
        await phone.evaluate("k => sessionStorage.setItem('jejaring.key', k)", await gw.key("ops"))
        await phone.reload()
        await phone.wait_for_selector("#kpis .tile")
        width = await phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
        await phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
        assert problems == [], problems
        (ARTIFACTS / "dashboard-timing.json").write_text(json.dumps({"shown_s": shown_after}))


async def test_dashboard_refuses_a_bad_key(tmp_path: Path, kafka_broker: Any) -> None:
    async with (
        gateway_stack(tmp_path, str(kafka_broker.bootstrap_servers), ("catalog",)) as gw,
        serving(gw.app) as base,
        chromium(tmp_path) as browser,
    ):
        page = await browser.new_page()
        await page.goto(f"{base}/dashboard/")
        await page.fill("#key-input", "jk_000000000000_" + "x" * 43)
        await page.click("#signin-form button[type=submit]")
        await page.wait_for_function("document.querySelector('#signin-error').textContent !== ''")
        assert await page.is_visible("#signin")
        # A good key that is not an ops key (an outlet's reads the catalog) is refused too.
        await page.fill("#key-input", await gw.key("outlet:o-1"))
        await page.click("#signin-form button[type=submit]")
        await page.wait_for_function(
            "document.querySelector('#signin-error').textContent.includes('ops')"
        )
        assert await page.is_visible("#signin")


async def test_a_key_revoked_while_watching_signs_the_dashboard_out(
    tmp_path: Path, kafka_broker: Any
) -> None:
    """The live stream ends when its key is revoked (it ran on for good), and the page goes
    back to the sign-in form rather than showing a stream that is no longer there."""
    async with (
        gateway_stack(
            tmp_path,
            str(kafka_broker.bootstrap_servers),
            ("catalog",),
            events=True,
            events_heartbeat_s=0.5,
            key_cache_s=0.0,
        ) as gw,
        serving(gw.app) as base,
        chromium(tmp_path) as browser,
    ):
        hub = gw.app.state.hub
        await wait_until(lambda: asyncio.sleep(0, hub.ready), 60, "the gateway's event consumer")
        page = await browser.new_page()
        await sign_in(page, base, await gw.key("ops"))
        [record] = [k for k in await gw.keys.list() if k.role == "ops"]
        assert await gw.keys.revoke(record.key_id)
        await page.wait_for_selector("#signin:not([hidden])", timeout=10_000)
        assert await page.evaluate("sessionStorage.getItem('jejaring.key')") is None
