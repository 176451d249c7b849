"""Which service owns a path, and who may call it.

Pure functions over (principal, method, path): the proxy asks `decide` and then does what
the decision says (refuse, forward, or check ownership first). Rules:

- admin: everything.
- ops: reads everything; proposes and approves rebalancing plans.
- outlet:<id>: its own outlet's routes (reads, and POS sales, receipts, adjustments,
  write-offs, returns, opening stock); its own restock requests (a request for another
  outlet is 403, another outlet's request reads as 404); dispatch of legs it sends and
  receipt of legs it receives; KPIs of its own; reading the catalog and pareto classes.
- supplier:<id>: everything under /suppliers/<its id>/; reading the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .identity import Principal

PREFIX = "/api/v1/"

OWNERS: dict[str, str] = {
    "products": "catalog",
    "clusters": "catalog",
    "categories": "catalog",
    "outlets": "stock",
    "pareto": "stock",
    "velocity": "stock",
    "restock-requests": "transfer",
    "transfers": "transfer",
    "rebalancing": "transfer",
    "kpis": "transfer",
    "suppliers": "supplier",
}
"""First path segment after /api/v1/ (before any `:verb`) -> the service that owns it."""

CATALOG = ("products", "clusters", "categories")
OUTLET_WRITES = frozenset(
    {"sales", "receipts", "adjustments", "write-offs", "returns", "opening-stock"}
)
READS = frozenset({"GET", "HEAD"})


class Check(Enum):
    NONE = "none"
    RESTOCK_BODY = "restock_body"
    """The JSON body's outlet_id must be the key's outlet."""
    RESTOCK_OWNER = "restock_owner"
    """The restock request (path segment 1) must belong to the key's outlet."""
    RESTOCK_RESPONSE = "restock_response"
    """The answer's outlet_id must be the key's outlet (else 404)."""
    LEG_SOURCE = "leg_source"
    """The leg (path segment 1) must be sent by the key's outlet."""
    LEG_DESTINATION = "leg_destination"
    """The leg must go to the key's outlet."""
    LEG_EITHER = "leg_either"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200
    code: str = ""
    message: str = ""
    check: Check = Check.NONE
    force_query: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def allow(check: Check = Check.NONE, **force_query: str) -> Decision:
        return Decision(True, check=check, force_query=force_query)

    @staticmethod
    def deny(message: str, code: str = "forbidden", status: int = 403) -> Decision:
        return Decision(False, status=status, code=code, message=message)


def segments(path: str) -> list[str]:
    """/api/v1/outlets/o-1/stock -> ["outlets", "o-1", "stock"]."""
    return [s for s in path[len(PREFIX) :].split("/") if s] if path.startswith(PREFIX) else []


def owner(segs: list[str]) -> str | None:
    if not segs:
        return None
    return OWNERS.get(segs[0].split(":", 1)[0])


def count_of(text: str | None, *, most: int = 10**15) -> int | None:
    """A whole number written in ASCII digits (at most `most`), else None. `str.isdigit`
    alone also takes "²" and other Unicode digits, which `int` then refuses (a 500), and
    a thousand-digit number trips Python's limit on converting long strings."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    value = int(text)
    return value if value <= most else None


def is_upload(segs: list[str]) -> bool:
    """CSV uploads get the larger body limit and are streamed through."""
    return bool(segs) and (segs[-1].endswith(":import") or segs[-1] == "opening-stock")


def is_slow(method: str, segs: list[str]) -> bool:
    """Calls that legitimately take long (a CSV import, proposing a network-wide
    rebalancing plan, approving one of hundreds of lines) get the longer upstream timeout."""
    if is_upload(segs):
        return True
    if method != "POST" or segs[:2] != ["rebalancing", "plans"]:
        return False
    return len(segs) == 2 or (len(segs) == 4 and segs[3] == "approve")


def decide(p: Principal, method: str, segs: list[str]) -> Decision:
    if p.role == "admin":
        return Decision.allow()
    if p.role == "ops":
        return _ops(method, segs)
    if p.role == "outlet":
        assert p.subject is not None
        return _outlet(p.subject, method, segs)
    if p.role == "supplier":
        assert p.subject is not None
        return _supplier(p.subject, method, segs)
    return Decision.deny("unknown role")


def _ops(method: str, segs: list[str]) -> Decision:
    if method in READS:
        return Decision.allow()
    plans = segs[:2] == ["rebalancing", "plans"] and method == "POST"
    if plans and (len(segs) == 2 or (len(segs) == 4 and segs[3] in ("approve", "reject"))):
        return Decision.allow()
    return Decision.deny("ops keys read everything and approve rebalancing plans only")


def _catalog_read(method: str, segs: list[str]) -> Decision | None:
    if segs[0].split(":", 1)[0] in CATALOG or segs[0] == "pareto":
        if method in READS and segs[0] != "products:export":
            return Decision.allow()
        return Decision.deny("the catalog is changed by ops")
    return None


def _outlet(me: str, method: str, segs: list[str]) -> Decision:
    head = segs[0]
    read = method in READS
    if head == "outlets":
        if len(segs) < 2:
            return Decision.deny("an outlet key sees its own outlet only")
        if segs[1] != me:
            return Decision.deny("this key belongs to another outlet", "not_your_outlet")
        if read:
            return Decision.allow()
        if method == "POST" and len(segs) == 3 and segs[2] in OUTLET_WRITES:
            return Decision.allow()
        return Decision.deny("ops or transfer change this, not the outlet")
    catalog = _catalog_read(method, segs)
    if catalog is not None:
        return catalog
    if head == "restock-requests":
        if len(segs) == 1:
            if method == "POST":
                return Decision.allow(Check.RESTOCK_BODY)
            if read:
                return Decision.allow(outlet_id=me)
        if len(segs) == 2 and read:
            return Decision.allow(Check.RESTOCK_RESPONSE)
        if len(segs) == 3 and segs[2] == "cancel" and method == "POST":
            return Decision.allow(Check.RESTOCK_OWNER)
        return Decision.deny("not allowed for an outlet key")
    if head == "transfers" and len(segs) >= 2:
        if len(segs) == 2 and read:
            return Decision.allow(Check.LEG_EITHER)
        if len(segs) == 3 and method == "POST":
            if segs[2] == "dispatch":
                return Decision.allow(Check.LEG_SOURCE)
            if segs[2] == "receive":
                return Decision.allow(Check.LEG_DESTINATION)
        return Decision.deny("not allowed for an outlet key")
    if head == "kpis" and read and len(segs) == 1:
        return Decision.allow(outlet_id=me)
    return Decision.deny("not allowed for an outlet key")


def _supplier(me: str, method: str, segs: list[str]) -> Decision:
    if segs[0] == "suppliers":
        if len(segs) < 2:
            return Decision.deny("a supplier key sees its own supplier only")
        if segs[1] != me:
            return Decision.deny("this key belongs to another supplier", "not_your_supplier")
        return Decision.allow()
    if segs[0].split(":", 1)[0] in CATALOG:
        if method in READS and segs[0] != "products:export":
            return Decision.allow()
        return Decision.deny("the catalog is changed by ops")
    return Decision.deny("not allowed for a supplier key")
