"""Webhook signing and retry schedule (pure; the sender is in adapters/webhook_sender.py).

A delivery is signed with HMAC-SHA256 over `"{timestamp}.{body}"` using the supplier's
secret. Receivers recompute it and should refuse timestamps older than a few minutes, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Jejaring-Signature"
TIMESTAMP_HEADER = "X-Jejaring-Timestamp"
DELIVERY_HEADER = "X-Jejaring-Delivery"
EVENT_HEADER = "X-Jejaring-Event"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff_s(failed_attempts: int, base_s: float, max_s: float) -> float:
    """Wait before the next try: base, 2*base, 4*base, ... capped at max_s."""
    return float(min(base_s * 2 ** max(failed_attempts - 1, 0), max_s))
