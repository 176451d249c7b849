"""Event contracts: the envelope, the registry and every event's payload, defined once."""

from . import catalog, stock, supplier, transfer
from .envelope import Envelope, new_traceparent, utcnow
from .registry import REGISTRY, EventRegistry, EventType, Payload, UnknownEventType

__all__ = [
    "REGISTRY",
    "Envelope",
    "EventRegistry",
    "EventType",
    "Payload",
    "UnknownEventType",
    "catalog",
    "new_traceparent",
    "stock",
    "supplier",
    "transfer",
    "utcnow",
]
