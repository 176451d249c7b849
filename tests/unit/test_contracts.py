"""The envelope, the registry and the AsyncAPI document generated from it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from jejaring_shared.asyncapi import build_asyncapi
from jejaring_shared.contracts import REGISTRY, Envelope, EventRegistry, Payload
from jejaring_shared.contracts.stock import StockReserved

ROOT = Path(__file__).resolve().parents[2]
STATE_EVENTS = {"stock.low", "stock.out", "stock.surplus", "stock.discrepancy"}


def test_envelope_round_trips_through_json() -> None:
    env = Envelope(type="stock.reserved", source="stock", key="o1:A", payload={"x": 1})
    back = Envelope.from_bytes(env.to_bytes())
    assert back == env
    assert back.occurred_at.tzinfo is not None  # always UTC-aware


def test_envelope_refuses_unknown_fields() -> None:
    raw = Envelope(type="t.x", source="s", key="k", payload={}).model_dump(mode="json")
    raw["surprise"] = 1
    with pytest.raises(ValidationError):
        Envelope.model_validate(raw)


def test_every_event_name_is_past_tense_or_a_command_on_a_commands_topic() -> None:
    for et in REGISTRY:
        service, _, name = et.name.partition(".")
        assert et.topic.startswith(service + ".")
        if et.topic.endswith(".commands"):
            assert not name.endswith("ed"), f"command {et.name} should be imperative"
        else:
            # stock.low/out/surplus/discrepancy are the design's names for observed states.
            last = name.split("_")[-1]
            assert last.endswith(("ed", "wn")) or et.name in STATE_EVENTS, et.name


def test_registry_refuses_a_name_twice() -> None:
    reg = EventRegistry()

    @reg.register("a.happened", topic="a.events")
    class A(Payload):
        n: int

    with pytest.raises(ValueError, match="twice"):

        @reg.register("a.happened", topic="a.events")
        class B(Payload):
            n: int


def test_payloads_are_strict() -> None:
    with pytest.raises(ValidationError):
        StockReserved.model_validate({"outlet_id": "o1", "sku": "A", "leg_id": "l", "quantity": 0})
    with pytest.raises(ValidationError):
        StockReserved.model_validate(
            {"outlet_id": "o1", "sku": "A", "leg_id": "l", "quantity": 1, "extra": True}
        )


def test_asyncapi_lists_every_event_with_its_schema() -> None:
    doc = build_asyncapi(REGISTRY)
    assert doc["asyncapi"].startswith("3.")
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == {et.name for et in REGISTRY}
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == REGISTRY.topics()
    reserved = doc["components"]["schemas"]["StockReserved"]
    assert set(reserved["required"]) >= {"outlet_id", "sku", "leg_id", "quantity"}


def test_published_asyncapi_document_is_current() -> None:
    """docs/asyncapi.json is generated (`make docs`); it must match the code."""
    published = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert published == build_asyncapi(REGISTRY), "run `make docs` and commit the result"


def test_envelope_ids_are_unique() -> None:
    ids = {Envelope(type="t.x", source="s", key="k", payload={}).id for _ in range(1000)}
    assert len(ids) == 1000 and all(isinstance(i, uuid.UUID) for i in ids)
