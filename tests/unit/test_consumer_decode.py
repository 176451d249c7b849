"""How the consumer runner sorts messages before any handler runs."""

from __future__ import annotations

from typing import Any

import pytest

from jejaring_shared.consumer import ConsumerRunner, _Poison, is_dependency_failure
from jejaring_shared.contracts import Envelope
from jejaring_shared.db import is_conflict
from jejaring_shared.metrics import BackboneMetrics
from jejaring_shared.settings import KafkaSettings
from support import probe


async def _noop(*_: Any) -> None:
    return None


def runner() -> ConsumerRunner:
    return ConsumerRunner(
        group_id="g",
        topics=[probe.PROBE_TOPIC],
        handlers={"probe.thing_happened": _noop},
        uow_factory=None,  # type: ignore[arg-type]  # not reached by decoding
        kafka=KafkaSettings(),
        metrics=BackboneMetrics("t"),
        registry=probe.REGISTRY,
    )


def envelope(**kw: Any) -> bytes:
    base: dict[str, Any] = {"type": "probe.thing_happened", "source": "t", "key": "k"}
    base.update(kw)
    base.setdefault("payload", {"key": "k", "seq": 1})
    return Envelope(**base).to_bytes()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "unparseable"),
        (b"", "unparseable"),
        (b'{"type": "probe.thing_happened"}', "unparseable"),
        (envelope(type="probe.unknown"), "unknown_type"),
        (envelope(version=99), "unsupported_version"),
        (envelope(payload={"key": "k", "seq": -1}), "invalid_payload"),
        (envelope(payload={"key": "k", "seq": 1, "extra": 2}), "invalid_payload"),
    ],
)
def test_poison_is_classified(raw: bytes, reason: str) -> None:
    with pytest.raises(_Poison) as info:
        runner()._decode(raw)
    assert info.value.reason == reason
    assert info.value.detail


def test_valid_event_decodes_to_typed_payload() -> None:
    env, payload = runner()._decode(envelope())
    assert env is not None and isinstance(payload, probe.ThingHappened)
    assert payload.seq == 1


def test_known_event_without_handler_is_ignored_not_dead_lettered() -> None:
    r = ConsumerRunner(
        group_id="g",
        topics=[probe.PROBE_TOPIC],
        handlers={},
        uow_factory=None,  # type: ignore[arg-type]
        kafka=KafkaSettings(),
        metrics=BackboneMetrics("t"),
        registry=probe.REGISTRY,
    )
    assert r._decode(envelope()) == (None, None)


def test_dependency_failures_are_retried_not_dead_lettered() -> None:
    import sqlalchemy.exc as sa_exc

    assert is_dependency_failure(ConnectionRefusedError())
    assert is_dependency_failure(sa_exc.OperationalError("SELECT 1", {}, Exception("down")))
    assert not is_dependency_failure(ValueError("bad data"))
    assert not is_dependency_failure(sa_exc.IntegrityError("INSERT", {}, Exception("dup")))


def test_a_lost_race_is_retried_not_dead_lettered() -> None:
    """PostgreSQL's deadlock and serialization failures (as SQLAlchemy's asyncpg adapter
    raises them: a plain DBAPIError whose orig carries the sqlstate)."""
    import sqlalchemy.exc as sa_exc

    class _PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    for state in ("40P01", "40001"):
        assert is_conflict(sa_exc.DBAPIError("SELECT 1", {}, _PgError(state)))
    assert not is_conflict(sa_exc.DBAPIError("SELECT 1", {}, _PgError("22P02")))
    assert not is_conflict(ValueError("bad data"))
