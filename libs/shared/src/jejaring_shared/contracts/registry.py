"""One registry of event types: name -> payload model, topic and version.

Payload models are declared once here (in the contract modules) and imported by every
service that emits or consumes them; services never redefine them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict


class Payload(BaseModel):
    """Base of every event payload: strict about unknown fields so drift is caught."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    topic: str
    version: int
    model: type[Payload]
    summary: str


class UnknownEventType(LookupError):
    pass


P = TypeVar("P", bound=type[Payload])


class EventRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_model: dict[type[Payload], EventType] = {}

    def register(self, name: str, *, topic: str, version: int = 1) -> Callable[[P], P]:
        """Class decorator: `@registry.register("stock.reserved", topic="stock.events")`."""

        def decorate(model: P) -> P:
            if name in self._by_name:
                raise ValueError(f"event type {name!r} is registered twice")
            summary = (model.__doc__ or name).strip().splitlines()[0]
            et = EventType(name=name, topic=topic, version=version, model=model, summary=summary)
            self._by_name[name] = et
            self._by_model[model] = et
            return model

        return decorate

    def get(self, name: str) -> EventType:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventType(name) from None

    def for_model(self, model: type[Payload]) -> EventType:
        try:
            return self._by_model[model]
        except KeyError:
            raise UnknownEventType(model.__name__) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[EventType]:
        return iter(sorted(self._by_name.values(), key=lambda e: e.name))

    def topics(self) -> set[str]:
        return {e.topic for e in self._by_name.values()}


REGISTRY = EventRegistry()
"""The registry of Jejaring's own events; the contract modules register into it."""
