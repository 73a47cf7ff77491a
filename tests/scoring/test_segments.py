"""Stored batch scores behind /v1/segments: validation, 404 before a run, erasure, kept runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Connection, text

from app.artifacts import current_directory
from app.config import Settings
from app.db import create_sync_engine
from app.scoring.batch import score_all
from app.scoring.lifecycle import STAGES
from app.scoring.registry import load_model
from app.scoring.repository import KEEP_RUNS
from tests.factories import event
from tests.scoring.support import assert_problem, segment_pages


def store_run(settings: Settings) -> int:
    """What `clv score --store` does, in-process (test_batch_score runs the CLI itself)."""
    directory = current_directory(settings.model_dir)
    assert directory is not None
    engine = create_sync_engine(settings)
    try:
        result = score_all(
            engine,
            load_model(directory),
            settings,
            dt.datetime.now(dt.UTC),
            out=None,
            store=True,
            progress=False,
        )
    finally:
        engine.dispose()
    assert result.run_id is not None
    return result.customers


async def post_recent_orders(client: httpx.AsyncClient, customers: list[str]) -> None:
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    events = [
        event("order", customer_id=c, occurred_at=(recent + dt.timedelta(hours=i)).isoformat())
        for i, c in enumerate(customers)
    ]
    response = await client.post("/v1/events/batch", json={"events": events})
    assert response.json()["created"] == len(customers)


@pytest.fixture
async def stored(client: httpx.AsyncClient, settings: Settings) -> httpx.AsyncClient:
    """A client whose database has one stored run of three customers."""
    await post_recent_orders(client, ["s-1", "s-2", "s-3"])
    assert store_run(settings) == 3
    return client


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/segments/churned", {}, "lifecycle_stage"),
        ("/v1/segments/active", {"value_tier": "gold"}, "value_tier"),
        ("/v1/segments/active", {"cursor": "nonsense"}, "cursor"),
        ("/v1/segments/active", {"cursor": "0.5:not-a-key"}, "cursor"),
        ("/v1/segments/active", {"limit": "0"}, "limit"),
        ("/v1/segments/active", {"limit": "1001"}, "limit"),
    ],
)
async def test_segment_requests_are_validated(
    stored: httpx.AsyncClient,
    path: str,
    params: dict[str, str],
    field: str,
) -> None:
    body = assert_problem(await stored.get(path, params=params), 422, "validation")
    assert field in [e["field"] for e in body["errors"]]


async def test_segments_are_404_before_any_stored_run(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v1/segments/active"), 404, "not-found")
    assert "clv score --store" in body["detail"]


async def members(client: httpx.AsyncClient) -> set[str]:
    found: set[str] = set()
    for stage in STAGES:
        items, _ = await segment_pages(client, stage, limit=1000)
        found |= {r["customer_id"] for r in items}
    return found


async def test_erasure_removes_the_customers_stored_scores(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await post_recent_orders(client, ["erase-0", "erase-1", "erase-2"])
    for _ in range(KEEP_RUNS + 1):  # one more run than is kept: the oldest is dropped
        assert store_run(settings) == 3
    assert await members(client) == {"erase-0", "erase-1", "erase-2"}
    erased = await client.delete("/v1/customers/erase-1")
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"] == {"customers": 1, "events": 1, "scores": KEEP_RUNS}
    assert await members(client) == {"erase-0", "erase-2"}
    # A customer never scored has nothing to erase there.
    await client.post("/v1/events", json=event("session", customer_id="unscored"))
    gone = await client.delete("/v1/customers/unscored")
    assert gone.json()["deleted"]["scores"] == 0


def lock_oldest_run(settings: Settings) -> Connection:
    """A transaction holding the oldest stored run's row: the next run's cleanup waits on it."""
    connection = create_sync_engine(settings).connect()
    oldest = connection.execute(
        text("SELECT id FROM score_runs ORDER BY id LIMIT 1 FOR UPDATE")
    ).scalar_one()
    assert oldest is not None
    return connection


def wait_for_blocked_cleanup(settings: Settings, seconds: float = 30) -> None:
    """Until a run's `finish_run` waits on the locked row (it has written its scores by then)."""
    engine = create_sync_engine(settings)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query ILIKE 'DELETE FROM score_runs%'"
                    )
                ).scalar_one()
            if waiting:
                return
            time.sleep(0.05)
    finally:
        engine.dispose()
    pytest.fail("the scoring run never reached its cleanup")


def scores_of(settings: Settings, customer_pk: int) -> int:
    engine = create_sync_engine(settings)
    with engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM scores WHERE customer_id = :pk"), {"pk": customer_pk}
        ).scalar_one()
    engine.dispose()
    return int(count)


async def test_an_erasure_during_a_scoring_run_leaves_no_scores_behind(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await post_recent_orders(client, ["kept-1", "kept-2"])
    for _ in range(KEEP_RUNS):
        store_run(settings)
    await post_recent_orders(client, ["leaver"])
    engine = create_sync_engine(settings)
    with engine.connect() as connection:
        leaver_pk = int(
            connection.execute(
                text("SELECT id FROM customers WHERE external_id = 'leaver'")
            ).scalar_one()
        )
    engine.dispose()

    lock = lock_oldest_run(settings)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            run = pool.submit(store_run, settings)
            try:
                # The run has read every customer's features and written their (uncommitted)
                # scores; now it waits to drop the oldest run. The customer asks to be erased.
                wait_for_blocked_cleanup(settings)
                erasure = asyncio.ensure_future(client.delete("/v1/customers/leaver"))
                # (With a fix that makes erasure wait for the run, it is still pending here.)
                await asyncio.wait({erasure}, timeout=2)
            finally:
                lock.rollback()
                lock.close()
            if run.result(timeout=60) != 3:
                pytest.fail("the run did not score the three customers")
        erased = await erasure
    finally:
        lock.engine.dispose()
    if erased.status_code != 200:
        pytest.fail(erased.text)
    assert scores_of(settings, leaver_pk) == 0, "the erased customer's scores were stored"
