"""The webhook sender: a background task that delivers stored webhooks with retries.

Deliveries are rows in `webhook_deliveries` (written with the assignment, in the same
transaction), so they survive a restart. The sender claims due rows by pushing their
`next_attempt_at` past a lease (FOR UPDATE SKIP LOCKED on PostgreSQL, so replicas do not
send the same row twice), posts them without holding a transaction, then records each
attempt and schedules the next one with exponential backoff. One assignment's deliveries
go out one at a time, in the order they were written. A process that dies while
sending leaves the row to be tried again when the lease ends (at-least-once; receivers
de-duplicate by the X-Jejaring-Delivery id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from jejaring_shared.app import Runtime
from jejaring_shared.contracts import utcnow
from jejaring_shared.db import UnitOfWorkFactory

from ..config import SupplierSettings
from ..domain import webhooks
from . import repository as repo
from .tables import suppliers, webhook_attempts, webhook_deliveries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int


async def _refusal(url: str) -> str | None:
    """Why this URL may not be called now (it names or resolves to a non-public address)."""
    try:
        parsed = httpx.URL(url)
        # The name httpx will connect to (IDNA-encoded as httpx does it): resolving the
        # Unicode form would let Python's older IDNA codec look up a different name.
        host = parsed.raw_host.decode("ascii")
        reason = webhooks.host_refusal(host)
        if reason is not None:
            return reason
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parsed.port or (443 if parsed.scheme == "https" else 80)
        )
    except (OSError, UnicodeError, ValueError, httpx.InvalidURL) as exc:
        return f"cannot resolve the webhook host: {exc}"
    return webhooks.address_refusal([str(info[4][0]) for info in infos])


async def post(
    client: httpx.AsyncClient,
    delivery: dict[str, Any],
    *,
    allow_private: bool = False,
    timeout_s: float = 5.0,
) -> Outcome:
    """One attempt, bounded as a whole by `timeout_s` (httpx's timeout bounds each read,
    not the request: a receiver dribbling its answer held the batch, and every other
    supplier's delivery with it). The answer's body is never read: its status is all."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            return await _attempt(client, delivery, allow_private, started)
    except TimeoutError:
        elapsed = int((time.perf_counter() - started) * 1000)
        return Outcome(False, None, f"no answer within {timeout_s:g} s", elapsed)


async def _attempt(
    client: httpx.AsyncClient, delivery: dict[str, Any], allow_private: bool, started: float
) -> Outcome:
    if not allow_private and (reason := await _refusal(delivery["url"])) is not None:
        # Not sent: counted as a failed attempt, so a name that points inward for a while
        # is tried again later and finally given up, like any receiver that is down.
        return Outcome(False, None, f"refused: {reason}"[:500], 0)
    body = delivery["body"].encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "jejaring-supplier-webhooks/1",
        webhooks.EVENT_HEADER: delivery["event"],
        webhooks.DELIVERY_HEADER: delivery["id"],
        webhooks.TIMESTAMP_HEADER: timestamp,
        webhooks.SIGNATURE_HEADER: webhooks.sign(delivery["secret"] or "", timestamp, body),
    }
    try:
        async with client.stream("POST", delivery["url"], content=body, headers=headers) as resp:
            status = resp.status_code
    except httpx.HTTPError as exc:
        elapsed = int((time.perf_counter() - started) * 1000)
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500], elapsed)
    elapsed = int((time.perf_counter() - started) * 1000)
    if 200 <= status < 300:
        return Outcome(True, status, None, elapsed)
    return Outcome(False, status, f"HTTP {status}", elapsed)


async def _claim(uows: UnitOfWorkFactory, settings: SupplierSettings) -> list[dict[str, Any]]:
    now = utcnow()
    lease = now + timedelta(seconds=settings.webhook_timeout_s + 30)
    # A leg's deliveries go out in the order they were written: its `assignment.cancelled`
    # waits while its `assignment.created` is still being retried, so a supplier's system
    # never hears of a cancellation before the assignment it cancels.
    earlier = webhook_deliveries.alias("earlier")
    waits_its_turn = sa.exists().where(
        earlier.c.leg_id == webhook_deliveries.c.leg_id,
        earlier.c.status == "pending",
        earlier.c.created_at < webhook_deliveries.c.created_at,
    )
    async with uows() as uow:
        conn = await repo.conn_of(uow)
        due = await repo.many(
            conn,
            sa.select(
                webhook_deliveries.c.id,
                webhook_deliveries.c.event,
                webhook_deliveries.c.url,
                webhook_deliveries.c.body,
                webhook_deliveries.c.attempts,
                suppliers.c.webhook_secret.label("secret"),
            )
            .join(suppliers, suppliers.c.id == webhook_deliveries.c.supplier_id)
            .where(
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now,
                ~waits_its_turn,
            )
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(settings.webhook_batch)
            .with_for_update(skip_locked=True, of=webhook_deliveries),
        )
        if due:
            await conn.execute(
                sa.update(webhook_deliveries)
                .where(webhook_deliveries.c.id.in_([d["id"] for d in due]))
                .values(next_attempt_at=lease)
            )
            await uow.commit()
    return due


async def _record(
    uows: UnitOfWorkFactory, settings: SupplierSettings, delivery: dict[str, Any], out: Outcome
) -> None:
    attempt = delivery["attempts"] + 1
    now = utcnow()
    if out.ok:
        values: dict[str, Any] = {"status": "delivered", "delivered_at": now, "last_error": None}
    elif attempt >= settings.webhook_max_attempts:
        values = {"status": "failed", "last_error": out.error}
    else:
        wait = webhooks.backoff_s(
            attempt, settings.webhook_backoff_base_s, settings.webhook_backoff_max_s
        )
        values = {"next_attempt_at": now + timedelta(seconds=wait), "last_error": out.error}
    async with uows() as uow:
        conn = await repo.conn_of(uow)
        await conn.execute(
            sa.insert(webhook_attempts).values(
                delivery_id=delivery["id"],
                attempt=attempt,
                attempted_at=now,
                ok=out.ok,
                status_code=out.status_code,
                error=out.error,
                duration_ms=out.duration_ms,
            )
        )
        await conn.execute(
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery["id"])
            .values(attempts=attempt, **values)
        )
        await uow.commit()


async def deliver_due(
    uows: UnitOfWorkFactory, client: httpx.AsyncClient, settings: SupplierSettings
) -> int:
    """Send every delivery that is due now (one batch); returns how many were tried."""
    due = await _claim(uows, settings)
    if not due:
        return 0
    work = asyncio.ensure_future(_send_and_record(uows, client, settings, due))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        # Stopping: let the attempts already on the wire finish and be logged, so the
        # delivery log stays whole. Bounded by the request timeout; a second cancel
        # (the shutdown's own bound) abandons them to the lease.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(work, settings.webhook_timeout_s + 2.0)
        raise
    return len(due)


async def _send_and_record(
    uows: UnitOfWorkFactory,
    client: httpx.AsyncClient,
    settings: SupplierSettings,
    due: list[dict[str, Any]],
) -> None:
    allow = settings.webhook_allow_private
    outcomes = await asyncio.gather(
        *(post(client, d, allow_private=allow, timeout_s=settings.webhook_timeout_s) for d in due),
        return_exceptions=True,
    )
    for delivery, result in zip(due, outcomes, strict=True):
        # One delivery's unexpected error must not keep the others from being recorded.
        outcome = (
            result
            if isinstance(result, Outcome)
            else Outcome(False, None, f"{type(result).__name__}: {result}"[:500], 0)
        )
        await _record(uows, settings, delivery, outcome)
        if not outcome.ok:
            log.info("webhook %s attempt failed: %s", delivery["id"], outcome.error)


async def run_webhook_sender(runtime: Runtime) -> None:
    """Background task of the service: loops until cancelled."""
    settings = runtime.settings
    if not isinstance(settings, SupplierSettings):
        settings = SupplierSettings()
    timeout = httpx.Timeout(settings.webhook_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        backoff = settings.webhook_poll_s
        while True:
            try:
                sent = await deliver_due(runtime.uow, client, settings)
                backoff = settings.webhook_poll_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database may be down; deliveries wait in their table meanwhile.
                log.warning("webhook sender: %r; retrying in %.1fs", exc, backoff)
                sent = 0
                backoff = min(backoff * 2, 30.0)
            if sent == 0:
                await asyncio.sleep(backoff)
