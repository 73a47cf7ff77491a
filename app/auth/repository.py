"""SQL for API keys, used by the `clv keys` command (synchronous)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import Connection, Row, func, insert, or_, select, text, update

from app.auth.keys import NewKey, Scope, generate_key, hash_key, split_key
from app.auth.models import ApiKey
from app.auth.verifier import CHANNEL


def _notify(connection: Connection) -> None:
    # Delivered at commit: every worker drops its key cache (see app.auth.verifier).
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"NOTIFY {CHANNEL}"))


def create_key(connection: Connection, name: str, scopes: Iterable[Scope]) -> NewKey:
    """Store a new key's hash; the returned secret is the only copy."""
    key = generate_key()
    connection.execute(
        insert(ApiKey).values(
            name=name,
            prefix=key.prefix,
            key_hash=key.key_hash,
            scopes=" ".join(sorted(s.value for s in scopes)),
        )
    )
    _notify(connection)
    return key


def is_active_key(connection: Connection, secret: str) -> bool:
    """True when `secret` is a stored, unrevoked key."""
    prefix = split_key(secret) if secret else None
    if prefix is None:
        return False
    query = select(ApiKey.id).where(
        ApiKey.prefix == prefix, ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None)
    )
    return connection.execute(query).first() is not None


def list_keys(
    connection: Connection,
) -> list[Row[tuple[str, str, str, dt.datetime, dt.datetime | None]]]:
    """Public fields of all keys, newest first: prefix, name, scopes, created_at, revoked_at."""
    query = select(ApiKey.prefix, ApiKey.name, ApiKey.scopes, ApiKey.created_at, ApiKey.revoked_at)
    return list(connection.execute(query.order_by(ApiKey.id.desc())))


def revoke_keys(connection: Connection, name_or_prefix: str) -> int:
    """Revoke active keys whose prefix or name matches; returns how many."""
    result = connection.execute(
        update(ApiKey)
        .where(
            or_(ApiKey.prefix == name_or_prefix, ApiKey.name == name_or_prefix),
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=func.now())
    )
    _notify(connection)
    return int(result.rowcount)
