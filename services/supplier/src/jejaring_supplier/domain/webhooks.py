"""Webhook signing and retry schedule (pure; the sender is in adapters/webhook_sender.py).

A delivery is signed with HMAC-SHA256 over `"{timestamp}.{body}"` using the supplier's
secret. Receivers recompute it and should refuse timestamps older than a few minutes, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

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


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def host_refusal(host: str) -> str | None:
    """Why a webhook may not name this host, or None. A supplier's URL must not make the
    service call into its own network (loopback, private, link-local such as the cloud
    metadata address): names that resolve there are refused again when sending."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None  # a name: checked on what it resolves to, at each delivery
    return None if _is_public(ip) else f"{host} is not a public address"


def address_refusal(addresses: list[str]) -> str | None:
    """Why a delivery may not go to what the host resolved to, or None."""
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not _is_public(ip):
            return f"resolves to {address}, not a public address"
    return None
