"""Assignment rules: the inbox of legs transfer gives a supplier, and its reliability.

assigned -> accepted -> shipped;  assigned -> declined;
assigned | accepted -> cancelled (transfer called the leg off: its request was cancelled
or expired, or the accept came too late), after which nothing more can be done with it.
Repeating the step already taken (a retried request) is a no-op, not an error; any other
step out of order is refused with a stable code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from jejaring_shared.errors import ApiError

Action = Literal["accept", "decline", "ship"]

_REFUSALS: dict[tuple[str, str], tuple[str, str]] = {
    ("accept", "declined"): ("assignment_declined", "the assignment was declined"),
    ("decline", "accepted"): ("assignment_accepted", "the assignment was already accepted"),
    ("decline", "shipped"): ("assignment_shipped", "the assignment was already shipped"),
    ("ship", "assigned"): ("not_accepted", "accept the assignment before shipping it"),
    ("ship", "declined"): ("assignment_declined", "the assignment was declined"),
    **{
        (action, "cancelled"): ("assignment_cancelled", "the assignment was called off")
        for action in ("accept", "decline", "ship")
    },
}


def _missed_a_deadline(r: dict[str, Any]) -> bool:
    """Called off after the supplier had already let a deadline pass: not accepted by
    `accept_by`, or accepted and not shipped by `ship_by`."""
    if r["accepted_at"] is None or r["accepted_at"] > r["accept_by"]:
        return bool(r["cancelled_at"] > r["accept_by"])
    return r["ship_by"] is not None and r["cancelled_at"] > r["ship_by"]


def check_transition(action: Action, current: dict[str, Any], now: datetime, **args: Any) -> bool:
    """True when the action must be applied, False when it was already applied (retry).

    Raises ApiError(409) for a step that is not allowed from the current state.
    """
    status = current["status"]
    if action == "accept":
        if status in ("accepted", "shipped"):
            return False
    elif action == "decline":
        if status == "declined":
            return False
    elif action == "ship" and status == "shipped":
        if current["shipped_quantity"] == args.get("quantity"):
            return False
        raise ApiError(
            409,
            "assignment_shipped",
            "the assignment was shipped with another quantity",
            "quantity",
        )
    refusal = _REFUSALS.get((action, status))
    if refusal is not None:
        raise ApiError(409, refusal[0], refusal[1], "leg_id")
    if action == "accept" and now > current["accept_by"]:
        raise ApiError(409, "deadline_passed", "the time to accept has passed", "accept_by")
    if action == "ship" and args["quantity"] > current["quantity"]:
        raise ApiError(
            422, "too_large", f"more than the {current['quantity']} assigned", "quantity"
        )
    return True


@dataclass(frozen=True)
class Reliability:
    assigned: int
    accepted: int
    declined: int
    shipped: int
    on_time: int
    open: int
    score: float | None
    """on_time / (assigned - open); None until an assignment has an outcome."""


def reliability(rows: list[dict[str, Any]], now: datetime) -> Reliability:
    """Accepted in time and shipped on time, over the assignments whose outcome is known.

    Assignments still within their deadlines are `open` and left out of the score, so a
    new assignment does not lower it before the supplier had a chance.
    """
    # A leg called off while the supplier was within its deadlines (its request cancelled
    # or expired, or timed out by transfer just after an accept made in time) says nothing
    # about the supplier; one called off after a deadline had passed counts, not on time,
    # as it would have had it not been called off.
    rows = [r for r in rows if r["status"] != "cancelled" or _missed_a_deadline(r)]
    accepted = declined = shipped = on_time = still_open = 0
    for r in rows:
        status = r["status"]
        if r["accepted_at"] is not None:
            accepted += 1
        if status == "declined":
            declined += 1
        if status == "shipped":
            shipped += 1
            in_time = r["accepted_at"] <= r["accept_by"] and (
                r["ship_by"] is None or r["shipped_at"] <= r["ship_by"]
            )
            on_time += int(in_time)
        elif (status == "assigned" and now <= r["accept_by"]) or (
            status == "accepted" and (r["ship_by"] is None or now <= r["ship_by"])
        ):
            still_open += 1
    decided = len(rows) - still_open
    return Reliability(
        assigned=len(rows),
        accepted=accepted,
        declined=declined,
        shipped=shipped,
        on_time=on_time,
        open=still_open,
        score=round(on_time / decided, 4) if decided else None,
    )
