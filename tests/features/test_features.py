"""Point-in-time features: exact values, no training/serving skew, late events."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import create_async_db_engine, create_sync_engine, session_factory
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader
from app.features.definitions import FEATURE_INDEX, FEATURE_NAMES, end_of_day
from app.features.repository import FeatureMatrix, FeatureRepository
from tests.factories import event
from tests.scoring.support import offline_matrix

DEMO_END = dt.datetime(2026, 6, 30, tzinfo=dt.UTC)
AS_OFS = [
    dt.datetime(2025, 3, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    dt.datetime(2025, 11, 28, 17, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 6, 30, tzinfo=dt.UTC),
]


def load_demo(settings: Settings, customers: int = 300) -> None:
    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, settings.currency)
    start = DEMO_END - dt.timedelta(days=730)
    for chunk in generate_demo(customers, 5, start=start, end=DEMO_END, chunk_customers=120):
        loader.load(chunk.events, chunk.customers)
    engine.dispose()


@pytest.fixture
async def session_of(settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = create_async_db_engine(settings)
    async with session_factory(engine)() as session:
        yield session
    await engine.dispose()


async def online_each(settings: Settings, ids: list[str], as_of: dt.datetime) -> np.ndarray:
    engine = create_async_db_engine(settings)
    rows = []
    async with session_factory(engine)() as session:
        repository = FeatureRepository(session)
        for customer_id in ids:
            matrix = await repository.for_customers([customer_id], as_of)
            assert matrix.customer_ids == [customer_id]
            rows.append(matrix.values[0])
        many = await repository.for_customers(ids[:50], as_of)
    await engine.dispose()
    online = np.vstack(rows)
    # The batch (many customers, one query) scope agrees too.
    np.testing.assert_array_equal(many.values, online[: len(many)])
    return online


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_online_and_offline_vectors_are_identical(
    backend: str, settings: Settings, sqlite_settings: Settings
) -> None:
    target = settings if backend == "postgres" else sqlite_settings
    load_demo(target)
    for as_of in AS_OFS:
        batch = offline_matrix(target, as_of, chunk=97)
        assert len(batch) > 50
        assert not np.isnan(batch.values).any()
        online = await online_each(target, batch.customer_ids, as_of)
        # Bit-for-bit: the same SQL aggregates and the same numpy arithmetic on both paths.
        np.testing.assert_array_equal(online, batch.values)
    # The data exercises behaviour features, refunds and multi-order customers.
    last = offline_matrix(target, AS_OFS[-1], chunk=97)
    for name in ("sessions_90d", "carts_90d", "refunded_revenue", "std_days_between_orders"):
        assert (last.values[:, FEATURE_INDEX[name]] > 0).any(), name


def value(matrix: FeatureMatrix, name: str) -> float:
    return float(matrix.values[0, FEATURE_INDEX[name]])


async def post_all(client: httpx.AsyncClient, events: list[dict[str, object]]) -> None:
    response = await client.post("/v1/events/batch", json={"events": events})
    assert response.json()["rejected"] == 0, response.text


async def features_of(client: httpx.AsyncClient, customer: str, as_of: str) -> dict[str, float]:
    response = await client.get(f"/v1/customers/{customer}/features", params={"as_of": as_of})
    assert response.status_code == 200, response.text
    return {f["name"]: f["value"] for f in response.json()["features"]}


HISTORY = [
    event("session", customer_id="pit", occurred_at="2026-01-01T09:00:00Z"),
    event("add_to_cart", customer_id="pit", occurred_at="2026-01-01T09:05:00Z"),
    event("order", customer_id="pit", occurred_at="2026-01-01T09:10:00Z", amount="100.00"),
    event("order", customer_id="pit", occurred_at="2026-01-01T18:00:00Z", amount="20.00"),
    event("order", customer_id="pit", occurred_at="2026-01-11T12:00:00Z", amount="40.00"),
    event("refund", customer_id="pit", occurred_at="2026-01-12T12:00:00Z", amount="10.00"),
    event("order", customer_id="pit", occurred_at="2026-01-31T12:00:00Z", amount="60.00"),
    event("product_view", customer_id="pit", occurred_at="2026-02-05T08:00:00Z"),
]


async def test_hand_computed_values(client: httpx.AsyncClient) -> None:
    await post_all(client, HISTORY)
    f = await features_of(client, "pit", "2026-02-10")  # end of 2026-02-10 UTC
    as_of = end_of_day(dt.date(2026, 2, 10))

    def days(stamp: str) -> float:
        return (as_of - dt.datetime.fromisoformat(stamp)).total_seconds() / 86400

    assert f["orders"] == 4
    assert f["order_days"] == 3  # Jan 1 (twice), Jan 11, Jan 31
    assert f["repeat_order_days"] == 2
    assert f["gross_revenue"] == 220.0
    assert f["refunded_revenue"] == 10.0
    assert f["net_revenue"] == 210.0
    assert f["avg_order_value"] == 55.0
    assert f["avg_day_value"] == pytest.approx(220 / 3)
    assert f["first_order_value"] == 120.0  # the whole first order day
    assert f["last_order_value"] == 60.0
    assert f["max_day_value"] == 120.0
    assert f["recency_days"] == pytest.approx(days("2026-01-31T12:00:00+00:00"))
    assert f["tenure_days"] == pytest.approx(days("2026-01-01T09:00:00+00:00"))
    assert f["order_age_days"] == pytest.approx(days("2026-01-01T09:10:00+00:00"))
    assert f["mean_days_between_orders"] == 15.0  # gaps of 10 and 20 days
    assert f["std_days_between_orders"] == 5.0
    assert f["order_span_days"] == 30.0
    assert f["orders_30d"] == 1  # only Jan 31 is within (Jan 11 end, Feb 10 end]
    assert f["revenue_90d"] == 220.0
    assert f["active_days"] == 4  # the refund-only day (Jan 12) is not activity
    assert f["refunds"] == 1
    assert f["recency_gap_ratio"] == pytest.approx(f["recency_days"] / 15.0)
    assert f["order_days_per_year"] == pytest.approx(365 * 3 / f["order_age_days"])
    assert f["carts_90d"] == 1
    assert f["sessions_30d"] == 0
    assert f["product_views_30d"] == 1
    assert f["cart_to_order_rate"] == 4.0
    assert f["refund_rate"] == pytest.approx(10 / 220)
    assert f["days_since_last_activity"] == pytest.approx(days("2026-02-05T08:00:00+00:00"))
    assert f["days_overdue"] == pytest.approx(f["recency_days"] - 15.0)


async def test_events_after_as_of_never_count(client: httpx.AsyncClient) -> None:
    await post_all(client, HISTORY)
    before = await features_of(client, "pit", "2026-02-10")
    await post_all(
        client,
        [event("order", customer_id="pit", occurred_at="2026-02-11T00:00:00Z", amount="999.00")],
    )
    after = await features_of(client, "pit", "2026-02-10")
    assert after == before
    later = await features_of(client, "pit", "2026-02-11")
    assert later["orders"] == before["orders"] + 1


async def test_a_late_event_with_an_old_timestamp_changes_the_past(
    client: httpx.AsyncClient,
) -> None:
    await post_all(client, HISTORY)
    before = await features_of(client, "pit", "2026-02-10")
    earlier = await features_of(client, "pit", "2026-01-19")
    late = event("order", customer_id="pit", occurred_at="2026-01-20T10:00:00Z", amount="5.00")
    await post_all(client, [late])
    after = await features_of(client, "pit", "2026-02-10")
    assert after["orders"] == before["orders"] + 1
    assert after["order_days"] == before["order_days"] + 1
    assert after["gross_revenue"] == before["gross_revenue"] + 5
    # An as_of before the late event's occurred_at is unaffected.
    assert await features_of(client, "pit", "2026-01-19") == earlier


REFUND_FEATURES = {"refunded_revenue", "refunds", "net_revenue", "refund_rate"}


async def test_a_refund_moves_only_the_refund_features(client: httpx.AsyncClient) -> None:
    """Issue 10: a refund is no "activity": recency, tenure, activity features ignore it."""
    await post_all(client, HISTORY)
    before = await features_of(client, "pit", "2026-02-20")
    refund = event("refund", customer_id="pit", occurred_at="2026-02-19T10:00:00Z", amount="30.00")
    await post_all(client, [refund])
    after = await features_of(client, "pit", "2026-02-20")
    moved = {name for name in before if after[name] != before[name]}
    assert moved == REFUND_FEATURES
    assert after["refunds"] == before["refunds"] + 1
    assert after["net_revenue"] == before["net_revenue"] - 30
    # A refund-only history has no timed event: every instant-based feature stays 0.
    await post_all(
        client,
        [event("refund", customer_id="odd", occurred_at="2026-02-01T10:00:00Z", amount="5.00")],
    )
    odd = await features_of(client, "odd", "2026-02-20")
    assert all(np.isfinite(v) for v in odd.values())
    assert {name for name, v in odd.items() if v != 0} <= REFUND_FEATURES


async def test_customer_without_orders_has_defined_values(client: httpx.AsyncClient) -> None:
    await post_all(
        client, [event("session", customer_id="browser", occurred_at="2026-03-01T10:00:00Z")]
    )
    f = await features_of(client, "browser", "2026-03-11")
    assert all(np.isfinite(v) for v in f.values())
    assert f["orders"] == 0
    assert f["recency_days"] == f["tenure_days"]  # no orders: days since first seen
    assert f["avg_order_value"] == 0
    assert f["sessions_30d"] == 1
    # A known customer with nothing before as_of is all zeros.
    empty = await features_of(client, "browser", "2026-02-01")
    assert set(empty.values()) == {0.0}


async def test_features_endpoint_contract(client: httpx.AsyncClient) -> None:
    await post_all(client, HISTORY)
    response = await client.get(
        "/v1/customers/pit/features", params={"as_of": "2026-02-10T00:00:00+01:00"}
    )
    body = response.json()
    assert [f["name"] for f in body["features"]] == list(FEATURE_NAMES)
    assert all(f["description"] for f in body["features"])
    assert body["as_of"] == "2026-02-09T23:00:00Z"
    assert len(body["fingerprint"]) == 16
    assert (await client.get("/v1/customers/nobody/features")).status_code == 404
    bad = await client.get("/v1/customers/pit/features", params={"as_of": "2026-02-10T00:00:00"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "as_of"
