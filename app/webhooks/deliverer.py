"""The webhook deliverer: fans alerts out to endpoints and sends them, signed, at least once.

One deliverer is active per database: on Postgres it holds a session advisory lock on its own
connection (released by the server when the process dies, so a standby in another worker or
replica takes over within a few seconds). Work is leased, not locked across HTTP calls: a
delivery whose sender died is sent again when its lease expires. SQLite (one host): every
process that runs a deliverer competes for leases, which SQLite's single writer serialises.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import __version__
from app.config import Settings
from app.db import async_url
from app.errors import is_database_unavailable
from app.webhooks import repository, ssrf
from app.webhooks.signing import signature_header

logger = logging.getLogger(__name__)

#: pg_advisory_lock key of the active deliverer ("clv-webhooks").
ADVISORY_KEY = 0x636C_7677_6862
FAN_OUT_BATCH = 1000
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 10_000


@dataclass(frozen=True)
class Outcome:
    """What one attempt got."""

    delivered: bool
    status_code: int | None
    error: str | None


def backoff(attempt: int, settings: Settings) -> float:
    """Seconds before attempt `attempt + 1`: exponential, capped, with "equal jitter" (half
    fixed, half random), so retries of many deliveries spread out but never come too soon."""
    delay = min(
        settings.webhooks_backoff_max_seconds,
        settings.webhooks_backoff_seconds * 2.0 ** (attempt - 1),
    )
    return delay / 2 + random.uniform(0, delay / 2)


def body_of(alert_id: str, kind: str, occurred_at: dt.datetime, data: dict[str, Any]) -> bytes:
    """The POSTed document: the alert exactly as GET /v1/alerts shows it."""
    return orjson.dumps(
        {
            "id": alert_id,
            "type": kind,
            "timestamp": occurred_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        }
    )


class Deliverer:
    """Sends due deliveries with bounded concurrency; each outcome is stored on its own."""

    def __init__(
        self, engine: AsyncEngine, settings: Settings, client: httpx.AsyncClient | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.client = client or httpx.AsyncClient(
            timeout=settings.webhooks_timeout_seconds,
            follow_redirects=False,  # a redirect could point anywhere, past the SSRF check
            trust_env=False,  # no proxy from the environment between us and the check
            limits=httpx.Limits(max_connections=settings.webhooks_concurrency),
            headers={"user-agent": f"clv-service-webhooks/{__version__}"},
        )
        # Longer than a send can take (asyncio.timeout bounds it) plus recording its outcome.
        self.lease = dt.timedelta(seconds=settings.webhooks_timeout_seconds + 10)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.outcomes: list[dict[str, Any]] = []  # stored by the next step, in one statement
        self.delivered = 0
        self._last_fan_out = -math.inf
        self._last_prune = -math.inf

    async def close(self) -> None:
        """Wait for in-flight sends, store their outcomes, then close the HTTP client."""
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)
        try:
            await self.flush()
        finally:
            await self.client.aclose()

    async def flush(self) -> None:
        """Store the outcomes gathered since the last flush (lost ones are sent again when
        their lease expires: at least once)."""
        outcomes, self.outcomes = self.outcomes, []
        if outcomes:
            async with self.engine.begin() as connection:
                await repository.record_outcomes(connection, outcomes)

    async def prune(self) -> int:
        """Delete alerts past CLV_ALERTS_RETENTION_DAYS, in batches; returns how many."""
        self._last_prune = time.monotonic()
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.settings.alerts_retention_days)
        total = 0
        while True:
            async with self.engine.begin() as connection:
                n = await repository.prune(connection, before, PRUNE_BATCH)
            total += n
            if n < PRUNE_BATCH:
                return total

    async def step(self) -> bool:
        """Store finished outcomes, fan out new alerts (at most once per poll interval while
        there is none), start sends for due deliveries; True when there was work."""
        await self.flush()
        if time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS:
            await self.prune()
        fanned = 0
        if time.monotonic() - self._last_fan_out >= self.settings.webhooks_poll_seconds:
            async with self.engine.begin() as connection:
                fanned = await repository.fan_out(connection, FAN_OUT_BATCH)
            # A full batch means more are waiting: fan out again on the next step.
            self._last_fan_out = -math.inf if fanned == FAN_OUT_BATCH else time.monotonic()
        free = self.settings.webhooks_concurrency - len(self.in_flight)
        claimed: list[Any] = []
        if free > 0:
            async with self.engine.begin() as connection:
                claimed = await repository.claim(connection, free, self.lease)
        for row in claimed:
            task = asyncio.create_task(self._deliver(row))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return bool(fanned or claimed)

    async def _deliver(self, row: Any) -> None:
        (
            delivery_id,
            attempts,
            _endpoint_id,
            url,
            secret,
            previous_secret,
            previous_until,
            alert_id,
            kind,
            occurred_at,
            data,
        ) = row
        secrets = [secret]
        if previous_secret and previous_until and previous_until > dt.datetime.now(dt.UTC):
            secrets.append(previous_secret)
        body = body_of(alert_id, kind, occurred_at, data)
        outcome = await self.send(url, secrets, alert_id, body)
        dead = not outcome.delivered and attempts >= self.settings.webhooks_max_attempts
        retry_at = (
            None
            if outcome.delivered or dead
            else dt.datetime.now(dt.UTC) + dt.timedelta(seconds=backoff(attempts, self.settings))
        )
        if outcome.delivered:
            self.delivered += 1
        elif dead:
            logger.warning(
                "webhook delivery dead-lettered after %d attempts",
                attempts,
                extra={"webhook_id": alert_id, "error": outcome.error},
            )
        now = dt.datetime.now(dt.UTC)
        self.outcomes.append(
            {
                "delivery_id": delivery_id,
                "new_status": "delivered" if outcome.delivered else "dead" if dead else "pending",
                "retry_at": retry_at or now,
                "done_at": now if outcome.delivered else None,
                "status_code": outcome.status_code,
                "error": outcome.error,
            }
        )

    async def send(self, url: str, secrets: list[str], message_id: str, body: bytes) -> Outcome:
        """One signed POST; 2xx is delivered, anything else (or no answer in time) is not."""
        try:
            target = await ssrf.resolve(url, self.settings.webhooks_allow_private)
        except ssrf.UnsafeUrl as exc:
            return Outcome(False, None, f"refused: {exc}"[:256])
        now = dt.datetime.fromtimestamp(int(time.time()), dt.UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature_header(secrets, message_id, now, body.decode()),
        }
        request_url = httpx.URL(url)
        extensions: dict[str, Any] = {}
        if not self.settings.webhooks_allow_private:
            # Connect to the address just checked, not to whatever the name resolves to a
            # moment later (DNS rebinding); Host and TLS SNI/verification keep the name.
            address = target.addresses[0]
            headers["host"] = request_url.netloc.decode()
            request_url = request_url.copy_with(host=str(address))
            extensions["sni_hostname"] = target.host
        try:
            async with asyncio.timeout(self.settings.webhooks_timeout_seconds):
                request = self.client.build_request(
                    "POST", request_url, content=body, headers=headers, extensions=extensions
                )
                response = await self.client.send(request, stream=True)
                await response.aclose()  # the status is all we need
        except TimeoutError:
            return Outcome(False, None, "timeout")
        except httpx.HTTPError as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:256])
        ok = 200 <= response.status_code < 300
        return Outcome(ok, response.status_code, None if ok else f"HTTP {response.status_code}")

    async def run(self, stop: asyncio.Event, lost: asyncio.Event | None = None) -> None:
        """Deliver until `stop` (or `lost`) is set: straight on while there is work, else poll."""
        while not stop.is_set() and not (lost is not None and lost.is_set()):
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_database_unavailable(exc):
                    # An outage is not an internal error: the loop retries once it is back.
                    logger.warning("webhook deliverer: database unavailable (%s); retrying", exc)
                else:
                    logger.exception("webhook deliverer step failed; retrying")
                busy = False
            if not busy or 2 * len(self.in_flight) >= self.settings.webhooks_concurrency:
                await _wait(stop, self.settings.webhooks_poll_seconds, self.in_flight)
                # Let a few more sends finish: their outcomes then share one write.
                await asyncio.sleep(0.01)


async def _wait(stop: asyncio.Event, seconds: float, in_flight: set[asyncio.Task[None]]) -> None:
    """Sleep until `stop`, a send finishing, or `seconds`."""
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({stopped, *in_flight}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()


def deliverer_engine(settings: Settings) -> AsyncEngine:
    """A small engine of the deliverer's own, apart from the request pool."""
    url = async_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        from app.db import create_async_db_engine

        return create_async_db_engine(settings)
    return create_async_engine(url, pool_size=3, max_overflow=0, hide_parameters=True)


async def _leadership(settings: Settings) -> asyncpg.Connection | None:
    """Postgres: a connection holding the deliverer lock, or None while another process has it."""
    dsn = (
        make_url(settings.database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    connection = await asyncpg.connect(dsn, timeout=settings.db_connect_timeout_seconds)
    try:
        if await connection.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_KEY):
            return connection
    except BaseException:
        await connection.close()
        raise
    await connection.close()
    return None


async def run_forever(
    settings: Settings,
    stop: asyncio.Event | None = None,
    on_leader: Callable[[], None] | None = None,
) -> None:
    """The deliverer loop of `clv deliver` and `clv serve`: wait to be the one active deliverer,
    then deliver until stopped or the lock's connection is lost (then wait again)."""
    stop = stop or asyncio.Event()
    postgres = make_url(settings.database_url).get_backend_name() == "postgresql"
    engine = deliverer_engine(settings)
    try:
        while not stop.is_set():
            lock: asyncpg.Connection | None = None
            if postgres:
                try:
                    lock = await _leadership(settings)
                except (OSError, asyncpg.PostgresError) as exc:
                    logger.warning("webhook deliverer cannot reach the database (%s)", exc)
                if lock is None:
                    await _wait(stop, max(2.0, settings.webhooks_poll_seconds), set())
                    continue
            logger.info("webhook deliverer active")
            if on_leader is not None:
                on_leader()
            deliverer = Deliverer(engine, settings)
            lost = asyncio.Event()
            watch = asyncio.create_task(_watch_lock(lock, lost)) if lock is not None else None
            try:
                await deliverer.run(stop, lost)
            finally:
                if watch is not None:
                    watch.cancel()
                with contextlib.suppress(Exception):
                    await deliverer.close()
                if lock is not None:
                    with contextlib.suppress(Exception):
                        await lock.close()
    finally:
        await engine.dispose()


async def _watch_lock(lock: asyncpg.Connection, lost: asyncio.Event) -> None:
    """Set `lost` when the lock's connection dies (the server has then released the lock)."""
    while True:
        try:
            await lock.fetchval("SELECT 1", timeout=5)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("webhook deliverer lost its database lock; standing by")
            lost.set()
            return
        await asyncio.sleep(5)
