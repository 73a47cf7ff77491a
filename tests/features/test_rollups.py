"""Daily rollups: the online read (rollups + partial days of raw events) equals the raw read.

Every path that writes events keeps `daily_rollups` in step (single and batch ingest, bulk
import, erasure); these tests write through each of them, out of order (late-arriving and
back-dated events for days already rolled up, events later on the as_of day), then compare the
rollup-backed vectors with the raw-event query's, bit for bit, at as_of instants that sit on
window bounds, mid-day and at the end of a day, on Postgres and SQLite.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import create_async_db_engine, create_sync_engine, session_factory
from app.events.bulk import EPOCH, BulkLoader, EventColumns
from app.features.definitions import FEATURE_INDEX, end_of_day
from app.features.repository import (
    FeatureMatrix,
    FeatureRepository,
    _matrix,
    aggregate_statement,
    time_params,
)
from app.features.rollups import backfill_sql
from tests.conftest import app_client
from tests.factories import event, iso
from tests.scoring.support import offline_matrix

UTC = dt.UTC
# Mid-day as_of instants whose window bounds fall on the planted events below, and the end of
# a day (the date form of as_of).
AS_OF = dt.datetime(2026, 4, 15, 13, 37, 21, 123456, tzinfo=UTC)
AS_OFS = [
    AS_OF,
    AS_OF - dt.timedelta(days=45, hours=5),
    end_of_day(dt.date(2026, 4, 15)),
    dt.datetime(2026, 1, 1, tzinfo=UTC),  # exactly midnight
]
KINDS = ["order", "order", "refund", "session", "product_view", "add_to_cart", "page_view"]


def _random_events(seed: int, customers: list[str], n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        kind = rng.choice(KINDS)
        moment = AS_OF - dt.timedelta(microseconds=rng.randrange(0, 500 * 86_400_000_000))
        extra: dict[str, Any] = {}
        if kind in ("order", "refund"):
            extra["amount"] = f"{rng.randrange(1, 40_000) / 100:.2f}"
        items.append(
            event(kind, customer_id=rng.choice(customers), occurred_at=iso(moment), **extra)
        )
    return items


def _edge_events(customer: str) -> list[dict[str, Any]]:
    """Events on the window bounds of AS_OF, either side of them, and later on its day."""
    items = []
    for days in (30, 90, 180, 365):
        bound = AS_OF - dt.timedelta(days=days)
        for shift in (dt.timedelta(0), dt.timedelta(microseconds=1), -dt.timedelta(hours=3)):
            items.append(event("order", customer_id=customer, occurred_at=iso(bound + shift)))
        items.append(event("session", customer_id=customer, occurred_at=iso(bound)))
        items.append(event("refund", customer_id=customer, occurred_at=iso(bound), amount="3.10"))
    # On the as_of day: at as_of (counts), after it (does not), at the day's first instant.
    start = dt.datetime.combine(AS_OF.date(), dt.time(), tzinfo=UTC)
    for moment in (
        AS_OF,
        AS_OF + dt.timedelta(microseconds=1),
        start,
        AS_OF + dt.timedelta(hours=2),
    ):
        items.append(event("order", customer_id=customer, occurred_at=iso(moment), amount="7.77"))
        items.append(event("add_to_cart", customer_id=customer, occurred_at=iso(moment)))
    return items


async def _both(
    settings: Settings, ids: list[str], as_of: dt.datetime
) -> tuple[FeatureMatrix, FeatureMatrix]:
    """(rollup-backed online read, raw-event read) of the same customers in one session."""
    engine = create_async_db_engine(settings)
    async with session_factory(engine)() as session:
        repository = FeatureRepository(session)
        online = await repository.for_customers(ids, as_of)
        raw_statement = aggregate_statement(repository.dialect, "many")
        params = {**time_params(as_of), "external_ids": ids}
        raw = _matrix((await session.execute(raw_statement, params)).all(), as_of)
    await engine.dispose()
    return online, raw


async def assert_rollups_exact(settings: Settings, ids: list[str]) -> None:
    """Online (rollups) == raw events == offline, bit for bit, at every as_of; the table too."""
    for as_of in AS_OFS:
        online, raw = await _both(settings, ids, as_of)
        assert online.customer_ids == raw.customer_ids
        np.testing.assert_array_equal(online.values, raw.values)
        np.testing.assert_array_equal(online.n_events, raw.n_events)
        one, _ = await _both(settings, ids[:1], as_of)  # the single-customer statement
        np.testing.assert_array_equal(one.values[0], raw.values[0])
        if online.n_events.any():  # offline lists the customers with events by as_of
            offline = offline_matrix(settings, as_of, chunk=3)
            for customer in set(offline.customer_ids) & set(ids):
                assert online.row(customer) == offline.row(customer)
    assert rollup_table(settings) == rollup_table(settings, rebuilt=True)


def rollup_table(settings: Settings, *, rebuilt: bool = False) -> list[tuple[Any, ...]]:
    """The rollup rows as maintained, or as recomputed from the events (in a rolled-back txn)."""
    engine: Engine = create_sync_engine(settings)
    with engine.connect() as connection:
        if rebuilt:
            connection.execute(text("DELETE FROM daily_rollups"))
            connection.execute(text(backfill_sql(engine.dialect.name)), {"lo": 0, "hi": 2**62})
        rows = [
            tuple(r) for r in connection.execute(text("SELECT * FROM daily_rollups ORDER BY 1, 2"))
        ]
        connection.rollback()
    engine.dispose()
    assert rows or not rebuilt
    return rows


async def _post(client: httpx.AsyncClient, items: list[dict[str, Any]], *, single: bool) -> None:
    if single:
        for item in items:
            assert (await client.post("/v1/events", json=item)).status_code == 201
        return
    for start in range(0, len(items), 200):
        response = await client.post(
            "/v1/events/batch", json={"events": items[start : start + 200]}
        )
        assert response.status_code in (200, 207), response.text
        assert all(r["status"] == "created" for r in response.json()["results"])


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_ingest_keeps_rollups_exact_with_late_and_back_dated_events(
    backend: str, settings: Settings, sqlite_settings: Settings
) -> None:
    target = settings if backend == "postgres" else sqlite_settings
    ids = [f"roll-{k}" for k in range(8)]
    async with app_client(target) as client:
        # Recent history first, then back-dated events for days already rolled up.
        recent = [
            e
            for e in _random_events(1, ids, 900)
            if e["occurred_at"] >= iso(AS_OF - dt.timedelta(days=100))
        ]
        older = [
            e
            for e in _random_events(2, ids, 900)
            if e["occurred_at"] < iso(AS_OF - dt.timedelta(days=100))
        ]
        await _post(client, recent, single=False)
        await assert_rollups_exact(target, ids)
        await _post(client, older, single=False)
        # Late arrivals one by one on the window-bound days and the as_of day, some on days
        # that already have a rollup row (a second event for the same customer and day).
        await _post(client, _edge_events("roll-0"), single=True)
        await _post(client, _edge_events("roll-edge"), single=False)
        ids.append("roll-edge")
        await assert_rollups_exact(target, ids)
        online, _ = await _both(target, ids, AS_OF)
        assert (online.values[:, FEATURE_INDEX["refunded_revenue"]] > 0).all()
        assert (online.values[:, FEATURE_INDEX["orders_30d"]] > 0).any()

        # Erasure takes the customer's rollups with their events; the others stay exact.
        assert (await client.delete("/v1/customers/roll-0")).status_code == 200
        ids.remove("roll-0")
        await assert_rollups_exact(target, ids)
        engine = create_sync_engine(target)
        with engine.connect() as connection:
            left = connection.execute(
                text(
                    "SELECT count(*) FROM daily_rollups WHERE customer_id NOT IN "
                    "(SELECT id FROM customers)"
                )
            ).scalar_one()
        engine.dispose()
        assert left == 0
        # A customer created again after erasure starts from nothing.
        await _post(client, _edge_events("roll-0"), single=False)
        ids.append("roll-0")
        await assert_rollups_exact(target, ids)


def _bulk_columns(seed: int, customers: list[str], n: int, tag: str) -> EventColumns:
    rng = np.random.default_rng(seed)
    end_us = int((AS_OF - EPOCH).total_seconds() * 1_000_000)
    kinds = rng.choice(np.array(KINDS, dtype=object), n)
    money = (kinds == "order") | (kinds == "refund")
    return EventColumns(
        event_id=np.array([f"{tag}-{k}" for k in range(n)], dtype=object),
        customer_external_id=rng.choice(np.array(customers, dtype=object), n),
        type=kinds,
        occurred_at_us=(
            end_us + 3 * 86_400_000_000 - rng.integers(0, 600 * 86_400_000_000, n)
        ).astype(np.int64),
        amount_cents=np.where(money, rng.integers(1, 50_000, n), -1).astype(np.int64),
        order_id=np.array([""] * n, dtype=object),
    )


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_bulk_import_keeps_rollups_exact(
    backend: str, settings: Settings, sqlite_settings: Settings
) -> None:
    target = settings if backend == "postgres" else sqlite_settings
    ids = [f"bulk-{k}" for k in range(10)]
    engine = create_sync_engine(target)
    loader = BulkLoader(engine, target.currency)
    # Two overlapping imports (the second back-dates into days the first rolled up), then a
    # re-run of the first: duplicates are skipped and must not be counted twice.
    first = _bulk_columns(3, ids, 3000, "b1")
    assert loader.load(first).events_created == 3000
    assert loader.load(_bulk_columns(4, ids, 2000, "b2")).events_created == 2000
    assert loader.load(first).events_created == 0
    engine.dispose()
    await assert_rollups_exact(target, ids)
    # API events on top of bulk-loaded days.
    async with app_client(target) as client:
        await _post(client, _edge_events("bulk-3"), single=False)
        await _post(client, _random_events(5, ids, 60), single=True)
    await assert_rollups_exact(target, ids)


def _migration() -> Any:
    """The 0005 migration module (its file name is not importable by name)."""
    import importlib.util

    from app.config import ROOT_DIR

    path = ROOT_DIR / "migrations" / "versions" / "20261130_0005_daily_rollups.py"
    spec = importlib.util.spec_from_file_location("rollups_migration", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_migration_backfills_existing_events_resumably(
    backend: str, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import schema
    from tests.conftest import create_database, drop_database

    url = create_database("i13_mig") if backend == "postgres" else None
    target = Settings(database_url=url) if url else sqlite_settings
    try:
        schema.upgrade("head", target)
        ids = [f"mig-{k}" for k in range(25)]
        engine = create_sync_engine(target)
        BulkLoader(engine, target.currency).load(_bulk_columns(6, ids, 2500, "m"))
        maintained = rollup_table(target)
        # Existing data without rollups: down to 0003 and up again backfills them.
        schema.downgrade("0003", target)
        schema.upgrade("head", target)
        assert rollup_table(target) == maintained
        # An interrupted backfill (the last customers missing) resumes; a re-run is a no-op.
        migration = _migration()
        monkeypatch.setattr(migration, "BATCH_CUSTOMERS", 4)
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM daily_rollups WHERE customer_id >= 10"))
            assert (
                connection.execute(text("SELECT max(customer_id) FROM daily_rollups")).scalar() == 9
            )
            migration.backfill(connection)
        assert rollup_table(target) == maintained
        with engine.begin() as connection:
            migration.backfill(connection)
        assert rollup_table(target) == maintained
        engine.dispose()
        await assert_rollups_exact(target, ids)
    finally:
        if url:
            drop_database(url)


async def test_concurrent_overlapping_batches_keep_rollups_exact(settings: Settings) -> None:
    """Writers racing on the same customer-days (Postgres row locks, additive upserts)."""
    import asyncio

    ids = [f"race-{k}" for k in range(4)]
    distinct = _random_events(7, ids, 1200)
    rng = random.Random(8)
    plans = [rng.sample(distinct, 500) for _ in range(6)]
    plans.append(distinct)  # every event sent at least once
    async with app_client(settings) as client:

        async def send(plan: list[dict[str, Any]]) -> list[str]:
            statuses = []
            for start in range(0, len(plan), 100):
                response = await client.post(
                    "/v1/events/batch", json={"events": plan[start : start + 100]}
                )
                assert response.status_code in (200, 207), response.text
                statuses += [r["status"] for r in response.json()["results"]]
            return statuses

        results = await asyncio.gather(*(send(p) for p in plans))
    flat = [s for r in results for s in r]
    assert flat.count("created") == len(distinct)
    assert set(flat) <= {"created", "duplicate"}
    await assert_rollups_exact(settings, ids)
