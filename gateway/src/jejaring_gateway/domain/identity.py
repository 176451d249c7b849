"""API keys and who they speak for.

A key reads `jk_<key id>_<secret>`: the key id (12 hex digits) finds the stored row, the
secret is checked against its SHA-256 (only the hash is stored, the key is shown once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

ROLES = ("outlet", "supplier", "ops", "admin")
SUBJECT_ROLES = ("outlet", "supplier")
SUBJECT_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
KEY_RE = re.compile(r"^jk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")


class InvalidRole(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: the key's role and, for outlets and suppliers, whose."""

    key_id: str
    role: str
    subject: str | None = None

    @property
    def name(self) -> str:
        return f"{self.role}:{self.subject}" if self.subject else self.role


def parse_role(text: str) -> tuple[str, str | None]:
    """`outlet:<id>`, `supplier:<id>`, `ops` or `admin` -> (role, subject)."""
    role, sep, subject = text.strip().partition(":")
    if role not in ROLES:
        raise InvalidRole(f"role must be outlet:<id>, supplier:<id>, ops or admin, not {text!r}")
    if role in SUBJECT_ROLES:
        if not sep or not SUBJECT_RE.match(subject):
            raise InvalidRole(f"{role} keys are bound to one {role}: {role}:<id>")
        return role, subject
    if sep:
        raise InvalidRole(f"{role} keys are not bound to an id")
    return role, None


def new_key() -> tuple[str, str, str]:
    """(key id, secret, the key as handed out)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"jk_{key_id}_{secret}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = KEY_RE.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
