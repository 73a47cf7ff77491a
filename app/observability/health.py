"""Readiness: the database answers quickly, its schema is at head, a model is loaded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.scoring.registry import ModelRegistry

READY_EXAMPLE: dict[str, Any] = {
    "ready": True,
    "checks": {"database": "ok", "model": "ok (20261124T175705Z-95b881)"},
}
NOT_READY_EXAMPLE: dict[str, Any] = {
    "ready": False,
    "checks": {
        "database": "ok",
        "model": "unavailable: ArtifactMismatch: model 20261124T175705Z-95b881 was trained on "
        "amounts in USD, this service runs in EUR (CLV_CURRENCY); train on this shop's history "
        "with `clv train`",
    },
}


class Readiness(BaseModel):
    """Whether this worker can serve, and every check's state (`ok` or why not)."""

    ready: bool
    checks: dict[str, str] = Field(description="`database` and `model`: `ok...` or the reason.")


#: Probes (load balancers, kubelets) may arrive in bursts: one database round trip per second.
CACHE_SECONDS = 1.0


class ReadinessProbe:
    """Answers /readyz; the database check reads alembic_version, so one query is ping and schema check."""

    def __init__(
        self, engine: AsyncEngine, registry: ModelRegistry, head: str, timeout: float = 1.0
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.head = head
        self.timeout = timeout
        self._database: str = "not checked yet"
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, checks) with a reason for every failing check."""
        database = await self._database_state()
        registry = self.registry
        model = (
            f"ok ({registry.active.version})"
            if registry.ready
            else f"unavailable: {registry.error}"
        )
        checks = {"database": database, "model": model}
        return database == "ok" and registry.ready, checks

    async def _database_state(self) -> str:
        if time.monotonic() - self._checked_at < CACHE_SECONDS:
            return self._database
        async with self._lock:  # concurrent probes share one query
            if time.monotonic() - self._checked_at >= CACHE_SECONDS:
                self._database = await self._query()
                self._checked_at = time.monotonic()
        return self._database

    async def _query(self) -> str:
        try:
            async with asyncio.timeout(self.timeout), self.engine.connect() as connection:
                revision = (
                    await connection.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one_or_none()
        except Exception as exc:  # any failure means not ready; say which
            return f"unavailable: {type(exc).__name__}"
        if revision != self.head:
            return f"schema at {revision}, this code needs {self.head}: run `clv migrate`"
        return "ok"
