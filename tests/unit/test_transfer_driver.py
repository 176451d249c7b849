"""The deadline driver's rounds: a step that keeps failing is held off, logged in full once,
and never keeps the rows due after it waiting."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from jejaring_shared.db import UnitOfWorkFactory, create_engine
from jejaring_transfer import saga
from jejaring_transfer.config import TransferSettings
from jejaring_transfer.entrypoints import driver


class _Runtime:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self.uow = uow


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[_Runtime]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/transfer.db")
    yield _Runtime(UnitOfWorkFactory(engine, source="transfer"))
    await engine.dispose()


async def test_a_leg_that_always_fails_is_held_off_and_the_legs_due_after_it_are_timed_out(
    runtime: _Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    due = ["bad-1", "bad-2", "good"]  # in deadline order: the failing ones are the oldest
    tried: list[str] = []

    async def due_legs(_conn: Any, _now: datetime, limit: int = 100) -> list[str]:
        return due[:limit]

    async def due_requests(_conn: Any, _now: datetime, limit: int = 100) -> list[str]:
        return []

    async def leg_failed(_ctx: Any, leg_id: str, *_args: Any, **_kw: Any) -> bool:
        tried.append(leg_id)
        if leg_id.startswith("bad"):
            raise RuntimeError(f"cannot handle {leg_id}")
        due.remove(leg_id)
        return True

    monkeypatch.setattr(saga, "due_legs", due_legs)
    monkeypatch.setattr(saga, "due_requests", due_requests)
    monkeypatch.setattr(saga, "leg_failed", leg_failed)
    monkeypatch.setattr(driver, "PAGE", 2)
    settings = TransferSettings(database_url="sqlite+aiosqlite://")
    now = [0.0]
    holdoff = driver.Holdoff(first_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=driver.__name__):
        assert await driver.drive_once(runtime, settings, rematch=False, holdoff=holdoff) == 0
        assert tried == ["bad-1", "bad-2"]  # a page's worth of failures...
        assert await driver.drive_once(runtime, settings, rematch=False, holdoff=holdoff) == 1
        assert tried[2:] == ["good"]  # ...is read past, not retried at once
        assert due == ["bad-1", "bad-2"]
        # Once their wait is over they are tried again, logged without the traceback (it
        # was logged in full the first time), and then wait twice as long.
        now[0] = 61
        await driver.drive_once(runtime, settings, rematch=False, holdoff=holdoff)
        now[0] = 61 + 119
        await driver.drive_once(runtime, settings, rematch=False, holdoff=holdoff)
    assert tried[3:] == ["bad-1", "bad-2"]
    failures = [r for r in caplog.records if "timing out leg bad-1" in r.getMessage()]
    assert [bool(r.exc_info) for r in failures] == [True, False]


def test_a_transient_failure_is_not_counted_against_the_row() -> None:
    """The database down or a lost race is not the row's fault: it waits the first step
    only, so the row comes due again soon after the database does."""
    holdoff = driver.Holdoff(first_s=1, max_s=300)
    for _ in range(5):
        assert holdoff.failed("leg:a", 0, transient=True) == 0
    assert holdoff.ready("leg:a", 1)


def test_a_holdoff_doubles_up_to_its_limit_and_forgets_what_is_no_longer_due() -> None:
    holdoff = driver.Holdoff(first_s=1, max_s=3)
    assert [holdoff.failed("leg:a", 0) for _ in range(3)] == [1, 2, 3]
    assert not holdoff.ready("leg:a", 2.9) and holdoff.ready("leg:a", 3)  # 1, 2, then 3 (cap)
    assert holdoff.waiting(0) == 1
    holdoff.forget_except(set())
    assert holdoff.ready("leg:a", 0) and holdoff.waiting(0) == 0
