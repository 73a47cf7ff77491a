"""Crash safety: an event is acknowledged only once committed, so a server killed with SIGKILL
(no drain, no goodbye) loses no acknowledged event, and clients that retry what was never
acknowledged neither lose nor duplicate anything."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.config import Settings
from app.db import sync_url
from tests.conftest import api_key
from tests.factories import event
from tests.security.support import ServerProcess
from tests.server import server_env

pytestmark = pytest.mark.slow

CLIENTS = 6
BATCH_EVERY = 4  # every 4th request of a client is a batch...
BATCH_SIZE = 25  # ...of this many events
KILLS = 2
#: How long a client keeps retrying one request while the server is down or restarting.
RETRY_SECONDS = 90.0


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, shared by all client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: dict[str, str] = field(default_factory=dict)  # event_id -> created/duplicate
    transport_failures: int = 0
    retried_statuses: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


def _deliver(
    http: httpx.Client, path: str, body: dict[str, Any], ledger: Ledger, failed: bool = False
) -> None:
    """Send until acknowledged: a transport error (server killed or not yet back) means "not
    acknowledged", so the very same request is sent again. `failed`: this is already a retry."""
    events = body["events"] if "events" in body else [body]
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            response = http.post(path, json=body)
        except httpx.TransportError:
            failed = True
            with ledger.lock:
                ledger.transport_failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        break
    if response.status_code not in (200, 201):
        with ledger.lock:
            ledger.unexpected.append(f"{path} {response.status_code} {response.text[:300]}")
        return
    if "events" in body:
        statuses = [r["status"] for r in response.json()["results"]]
    else:
        statuses = [response.json()["status"]]
    with ledger.lock:
        for item, status in zip(events, statuses, strict=True):
            if status not in ("created", "duplicate"):
                ledger.unexpected.append(f"{item['event_id']}: {status}")
                continue
            ledger.acknowledged[item["event_id"]] = status
            if failed:
                ledger.retried_statuses[status] += 1


def _client(base: str, key: str, number: int, ledger: Ledger, stop: threading.Event) -> None:
    """One shop backend: single events, and every BATCH_EVERY-th request a batch."""
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        request = 0
        while not stop.is_set():
            request += 1
            count = BATCH_SIZE if request % BATCH_EVERY == 0 else 1
            events = [
                event(
                    "order" if (request + i) % 3 == 0 else "page_view",
                    event_id=f"crash-{number}-{request}-{i}",
                    customer_id=f"crash-cust-{(request + i) % 15}",  # shared across clients
                )
                for i in range(count)
            ]
            with ledger.lock:
                ledger.sent.update((e["event_id"], e) for e in events)
            if count == 1:
                _deliver(http, "/v1/events", events[0], ledger)
            else:
                _deliver(http, "/v1/events/batch", {"events": events}, ledger)


def _impatient_client(base: str, key: str, ledger: Ledger, stop: threading.Event) -> None:
    """A client that gives up on big batches after 20 ms: the server usually commits them
    anyway, so its retries meet events stored without an acknowledgement (duplicates)."""
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=base, headers=headers, timeout=0.02) as hasty,
        httpx.Client(base_url=base, headers=headers, timeout=30) as patient,
    ):
        request = 0
        while not stop.is_set():
            request += 1
            events = [
                event("product_view", event_id=f"crash-hasty-{request}-{i}", customer_id="hasty")
                for i in range(500)
            ]
            with ledger.lock:
                ledger.sent.update((e["event_id"], e) for e in events)
            try:
                hasty.post("/v1/events/batch", json={"events": events})
            except httpx.TransportError:
                pass  # whatever the server did, nothing was acknowledged: retry below
            _deliver(patient, "/v1/events/batch", {"events": events}, ledger, failed=True)


def _wait_for_more_acks(ledger: Ledger, more: int, seconds: float = 60.0) -> None:
    target = ledger.acked_count() + more
    deadline = time.monotonic() + seconds
    while ledger.acked_count() < target:
        assert time.monotonic() < deadline, "the clients stopped making progress"
        time.sleep(0.05)


def test_sigkill_mid_stream_loses_no_acknowledged_event_and_retries_are_idempotent(
    settings: Settings, tmp_path: Path
) -> None:
    key = api_key(settings.database_url, "events:write")
    server = ServerProcess(server_env(settings, auth=True), tmp_path / "server.log")
    ledger = Ledger()
    stop = threading.Event()
    server.start()
    threads = [
        threading.Thread(target=_client, args=(server.base, key, n, ledger, stop), daemon=True)
        for n in range(CLIENTS)
    ] + [
        threading.Thread(
            target=_impatient_client, args=(server.base, key, ledger, stop), daemon=True
        )
    ]
    try:
        for thread in threads:
            thread.start()
        for _ in range(KILLS):
            _wait_for_more_acks(ledger, 300)
            failures_before = ledger.transport_failures
            server.kill()  # mid-stream: six clients have requests in flight
            time.sleep(0.5)  # the clients see refused connections meanwhile
            server.start()  # same port: the clients' retries find it again
            _wait_for_more_acks(ledger, 100)
            assert ledger.transport_failures > failures_before  # the kill did cut requests
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=RETRY_SECONDS + 30)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert not ledger.unexpected, ledger.unexpected[:10]
        sent = dict(ledger.sent)
        # Every request was eventually acknowledged (the clients retried until it was).
        assert set(ledger.acknowledged) == set(sent)
        # Retries met both cases: never stored (created now) and stored unacknowledged (duplicate).
        assert ledger.retried_statuses["created"] > 0
        assert ledger.retried_statuses["duplicate"] > 0

        engine = create_engine(sync_url(settings.database_url))
        with engine.connect() as connection:
            stored = connection.execute(
                text(
                    "SELECT e.event_id, c.external_id, e.type, count(*) OVER (PARTITION BY e.event_id) "
                    "FROM events e JOIN customers c ON c.id = e.customer_id "
                    "WHERE e.event_id LIKE 'crash-%'"
                )
            ).all()
        engine.dispose()
        # Each acknowledged event exactly once, with the content that was sent; nothing else.
        assert len(stored) == len(sent)
        assert all(copies == 1 for *_, copies in stored)
        assert {(r[0], r[1], r[2]) for r in stored} == {
            (e["event_id"], e["customer_id"], e["type"]) for e in sent.values()
        }

        # Replaying the whole ledger (what a client that lost every answer would do) stores
        # nothing new: every event comes back as a duplicate with 200.
        items = list(sent.values())
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as http:
            single = http.post("/v1/events", json=items[0])
            assert (single.status_code, single.json()["status"]) == (200, "duplicate")
            for start in range(0, len(items), 1000):
                replay = http.post("/v1/events/batch", json={"events": items[start : start + 1000]})
                assert replay.status_code == 200, replay.text
                assert replay.json()["duplicates"] == len(items[start : start + 1000])
        engine = create_engine(sync_url(settings.database_url))
        with engine.connect() as connection:
            count = connection.execute(
                text("SELECT count(*) FROM events WHERE event_id LIKE 'crash-%'")
            ).scalar_one()
        engine.dispose()
        assert count == len(sent)
    finally:
        server.stop()
