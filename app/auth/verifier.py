"""Verifying bearer keys on every request, cheaply and with immediate revocation.

Postgres: verified keys are cached per worker, and every change to api_keys (revocation,
creation, deletion) is followed by `NOTIFY clv_api_keys`, on which each worker drops its cache.
Two caches, dropped together: the key rows by public prefix, and the principals of secrets that
verified (bounded: a presented secret is cached only after it matched its stored hash, so at most
one entry per live key and version of it; MAX_VERIFIED caps it anyway), which spares a repeated
caller the hash and the scope parsing.
While the listening connection is down, the cache is off and every request reads the table.
SQLite (single host, no NOTIFY): every request reads the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.keys import Scope, parse_scopes, split_key, verify
from app.auth.models import ApiKey

logger = logging.getLogger(__name__)
CHANNEL = "clv_api_keys"
#: At most this many verified secrets are remembered per worker (the cache restarts when full).
MAX_VERIFIED = 1024


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, its public prefix and its scopes."""

    key_id: int
    name: str
    prefix: str
    scopes: frozenset[Scope]


@dataclass(frozen=True)
class _Row:
    key_id: int
    name: str
    key_hash: str
    scopes: str
    revoked: bool


class KeyVerifier:
    """Resolves a presented key to a Principal, or None."""

    def __init__(
        self, engine: AsyncEngine, read_pool: asyncpg.Pool | None, database_url: str
    ) -> None:
        self.engine = engine
        self.read_pool = read_pool
        self.database_url = database_url
        self._cache: dict[str, _Row] = {}
        self._verified: dict[str, Principal] = {}
        self._cache_on = False
        self._generation = 0  # bumped on every invalidation
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Postgres: keep a LISTEN connection (reconnecting in the background) for invalidations."""
        if self.read_pool is not None:
            self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    def _invalidate(self, *_: Any) -> None:
        self._generation += 1
        self._cache.clear()
        self._verified.clear()

    async def _listen_forever(self) -> None:
        url = (
            make_url(self.database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        while True:
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(url, timeout=5)
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._invalidate)
                self._listener = connection
                self._invalidate()
                self._cache_on = True  # only from here on can a cached entry be trusted
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: read the table on every request meanwhile
                logger.warning(
                    "api key listener unavailable (%s); not caching keys", type(exc).__name__
                )
            finally:
                self._cache_on = False
                self._invalidate()
            await asyncio.sleep(1.0)

    async def _lookup(self, prefix: str) -> _Row | None:
        if self.read_pool is not None:
            async with self.read_pool.acquire() as connection:
                record = await connection.fetchrow(
                    "SELECT id, name, key_hash, scopes, revoked_at IS NOT NULL FROM api_keys WHERE prefix = $1",
                    prefix,
                )
            return (
                None
                if record is None
                else _Row(record[0], record[1], record[2], record[3], record[4])
            )
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        ApiKey.id, ApiKey.name, ApiKey.key_hash, ApiKey.scopes, ApiKey.revoked_at
                    ).where(ApiKey.prefix == prefix)
                )
            ).first()
        return None if row is None else _Row(row[0], row[1], row[2], row[3], row[4] is not None)

    async def principal(self, secret: str) -> Principal | None:
        """The key's principal, or None when it is malformed, unknown, wrong or revoked."""
        if self._cache_on:
            known = self._verified.get(secret)
            if known is not None:
                return known
        prefix = split_key(secret)
        if prefix is None:
            verify(secret, None)  # same work as for a wrong key
            return None
        row = self._cache.get(prefix) if self._cache_on else None
        generation = self._generation
        if row is None:
            row = await self._lookup(prefix)
        if row is None or row.revoked:
            verify(secret, None)
            return None
        if not verify(secret, row.key_hash):
            return None
        principal = Principal(row.key_id, row.name, prefix, parse_scopes(row.scopes))
        # A row read before an invalidation that arrived during the read must not be cached.
        if self._cache_on and generation == self._generation:
            self._cache[prefix] = row
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
            self._verified[secret] = principal
        return principal
