"""Key material: generation, hashing, constant-time verification, scopes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

KEY_PATTERN = re.compile(r"^clv_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    """What a key may do."""

    events_write = "events:write"
    predictions_read = "predictions:read"
    customers_erase = "customers:erase"
    admin = "admin"
    webhooks_admin = "webhooks:admin"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: `secret` is shown once, only `key_hash` is stored."""

    secret: str
    prefix: str
    key_hash: str


def hash_key(secret: str) -> str:
    """SHA-256 of the whole key. Keys carry 256 random bits, so a slow KDF would add nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> NewKey:
    """A new random key `clv_<prefix>_<secret>`."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(10))
    secret = f"clv_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(secret=secret, prefix=prefix, key_hash=hash_key(secret))


def split_key(secret: str) -> str | None:
    """The prefix of a well-formed key, None for anything else."""
    match = KEY_PATTERN.match(secret)
    return match.group(1) if match else None


_DUMMY_HASH = hash_key("clv_0000000000_" + "0" * 43)


def verify(secret: str, stored_hash: str | None) -> bool:
    """Constant-time comparison; an unknown key costs the same as a wrong one."""
    return (
        hmac.compare_digest(hash_key(secret), stored_hash or _DUMMY_HASH)
        and stored_hash is not None
    )


def parse_scopes(text: str) -> frozenset[Scope]:
    """Scopes from "a,b" / "a b" / "all"; ValueError names an unknown one."""
    names = [s for s in re.split(r"[,\s]+", text.strip()) if s]
    if names == ["all"]:
        return ALL_SCOPES
    out = set()
    for name in names:
        try:
            out.add(Scope(name))
        except ValueError as exc:
            allowed = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {name!r}; allowed: {allowed} (or all)") from exc
    if not out:
        raise ValueError("give at least one scope")
    return frozenset(out)
