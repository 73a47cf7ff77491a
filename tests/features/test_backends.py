"""Postgres and SQLite compute the same feature vectors, bit for bit, from the same events.

Instants are where the two SQL dialects can part: SQLite's `julianday()` rounds to the
millisecond, so an order at 23:59:59.9996 once landed on the next day there (and its epoch on
the next second). The events below sit on such edges: sub-millisecond and last-microsecond
instants around midnight, offsets across daylight-saving changes, window bounds to the
microsecond.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import httpx
import numpy as np

from app.config import Settings
from app.db import create_async_db_engine, session_factory
from app.features.definitions import end_of_day
from app.features.repository import FeatureMatrix, FeatureRepository
from tests.factories import event
from tests.scoring.support import offline_matrix

UTC = dt.UTC
MIDNIGHT = dt.datetime(2026, 3, 1, tzinfo=UTC)


def _edge_events() -> list[dict[str, Any]]:
    """The issue's case plus instants on every kind of edge, for a handful of customers."""
    items = [
        # The reported case: Postgres says two order days and a first order of 10.
        event("order", customer_id="edge-a", occurred_at="2026-02-28T23:59:59.9996Z", amount="10"),
        event("order", customer_id="edge-a", occurred_at="2026-03-01T00:00:00.0004Z", amount="20"),
        event("order", customer_id="edge-a", occurred_at="2026-03-02T12:00:00Z", amount="30"),
        # Last and first microsecond of a day; half a millisecond (rounds up in julianday).
        event("order", customer_id="edge-b", occurred_at="2025-12-31T23:59:59.999999Z"),
        event("order", customer_id="edge-b", occurred_at="2026-01-01T00:00:00.000001Z"),
        event("session", customer_id="edge-b", occurred_at="2026-01-10T23:59:59.9995Z"),
        event("refund", customer_id="edge-b", occurred_at="2026-01-11T23:59:59.99951Z", amount="5"),
        # Europe/Berlin spring forward (2026-03-29 02:00 CET -> 03:00 CEST) and fall back.
        event("order", customer_id="edge-c", occurred_at="2026-03-29T01:59:59.9999+01:00"),
        event("order", customer_id="edge-c", occurred_at="2026-03-29T03:00:00.0001+02:00"),
        event("add_to_cart", customer_id="edge-c", occurred_at="2025-10-26T02:30:00.5+02:00"),
        event("order", customer_id="edge-c", occurred_at="2025-10-26T02:30:00.5+01:00"),
        # US Eastern fall back (2025-11-02 02:00 EDT -> 01:00 EST): local midnight != UTC's.
        event("order", customer_id="edge-d", occurred_at="2025-11-01T23:59:59.99999-04:00"),
        event("order", customer_id="edge-d", occurred_at="2025-11-02T01:30:00.0002-04:00"),
        event("order", customer_id="edge-d", occurred_at="2025-11-02T01:30:00.0002-05:00"),
        event("product_view", customer_id="edge-d", occurred_at="2025-11-02T23:59:59.9997-05:00"),
        # Nine fraction digits (accepted, cut to the microsecond).
        event("order", customer_id="edge-e", occurred_at="2026-02-14T23:59:59.999999999Z"),
        event("session", customer_id="edge-e", occurred_at="2026-02-15T00:00:00.000000001Z"),
    ]
    # Many more instants a few hundred microseconds either side of a midnight, seeded.
    rng = random.Random(14)
    for k in range(120):
        day = MIDNIGHT - dt.timedelta(days=rng.randrange(0, 400))
        moment = day + dt.timedelta(microseconds=rng.randint(-2_000, 2_000))
        kind = rng.choice(["order", "order", "session", "add_to_cart", "refund", "product_view"])
        money = (
            {"amount": f"{rng.randint(1, 50_000) / 100:.2f}"} if kind in ("order", "refund") else {}
        )
        stamp = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
        items.append(event(kind, customer_id=f"rnd-{k % 9}", occurred_at=stamp, **money))
    return items


def _as_ofs() -> list[dt.datetime]:
    """Several cut-offs, some exactly on an event or a window bound to the microsecond."""
    edge = dt.datetime(2026, 2, 28, 23, 59, 59, 999600, tzinfo=UTC)
    return [
        end_of_day(dt.date(2026, 2, 28)),
        edge,  # exactly the edge order
        edge - dt.timedelta(microseconds=1),
        edge + dt.timedelta(days=30),  # t30 falls exactly on the edge order
        edge + dt.timedelta(days=90, microseconds=1),
        dt.datetime(2026, 3, 29, 1, 0, 0, 100, tzinfo=UTC),
        MIDNIGHT + dt.timedelta(days=1),
        dt.datetime(2026, 11, 1, tzinfo=UTC),
    ]


async def _post_all(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 100):
        answer = await client.post("/v1/events/batch", json={"events": items[start : start + 100]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["created"] == len(items[start : start + 100]), answer.text


async def _online(settings: Settings, ids: list[str], as_of: dt.datetime) -> FeatureMatrix:
    engine = create_async_db_engine(settings)
    async with session_factory(engine)() as session:
        matrix = await FeatureRepository(session).for_customers(ids, as_of)
    await engine.dispose()
    return matrix


async def test_postgres_and_sqlite_features_agree_bit_for_bit(
    client: httpx.AsyncClient,
    sqlite_client: httpx.AsyncClient,
    settings: Settings,
    sqlite_settings: Settings,
) -> None:
    items = _edge_events()
    await _post_all(client, items)
    await _post_all(sqlite_client, items)
    compared = 0
    for as_of in _as_ofs():
        postgres = offline_matrix(settings, as_of, chunk=4)
        sqlite = offline_matrix(sqlite_settings, as_of, chunk=4)
        assert postgres.customer_ids == sqlite.customer_ids, as_of
        assert postgres.values.tobytes() == sqlite.values.tobytes(), (
            as_of,
            np.argwhere(postgres.values != sqlite.values).tolist()[:10],
        )
        ids = postgres.customer_ids
        online_pg = await _online(settings, ids, as_of)
        online_lite = await _online(sqlite_settings, ids, as_of)
        assert online_pg.values.tobytes() == postgres.values.tobytes(), as_of
        assert online_lite.values.tobytes() == postgres.values.tobytes(), as_of
        compared += len(ids)
    assert compared > 40

    # The reported case, by value: two order days, the first worth 10 (Postgres and SQLite).
    as_of = dt.datetime(2026, 3, 1, 12, tzinfo=UTC)
    for target in (settings, sqlite_settings):
        row = (await _online(target, ["edge-a"], as_of)).row("edge-a")
        assert (row["order_days"], row["first_order_value"]) == (2.0, 10.0), target.database_url
