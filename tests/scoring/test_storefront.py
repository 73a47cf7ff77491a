"""The storefront flow: post an event with `score=true` and get the fresh prediction back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.features.definitions import parse_as_of
from tests.conftest import app_client
from tests.factories import event
from tests.scoring.support import without_scored_at


def recently(hours_ago: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)).isoformat()


def shortly(seconds: float) -> str:
    """An instant a little ahead of the server clock, within CLV_MAX_FUTURE_SKEW_SECONDS (300)."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


async def prediction_as_of(client: httpx.AsyncClient, customer: str, as_of: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{customer}/prediction", params={"as_of": as_of})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_posting_with_score_returns_a_prediction_including_the_event(
    client: httpx.AsyncClient,
) -> None:
    browse = await client.post(
        "/v1/events?score=true",
        json=event("session", customer_id="shopper", occurred_at=recently(5)),
    )
    assert browse.status_code == 201, browse.text
    before = browse.json()["prediction"]
    assert before["customer_id"] == "shopper"
    assert before["segment"]["lifecycle_stage"] == "prospect"

    order = event("order", customer_id="shopper", occurred_at=recently(1), amount="180.00")
    response = await client.post("/v1/events", params={"score": "true"}, json=order)
    assert response.status_code == 201, response.text
    ack = response.json()
    assert ack["status"] == "created"
    assert ack["event"]["event_id"] == order["event_id"]
    assert "prediction_error" not in ack
    after = ack["prediction"]
    # The order counts: the customer is no longer a prospect, and the numbers moved.
    assert after["segment"]["lifecycle_stage"] == "new"
    assert after["clv"]["value"] != before["clv"]["value"]
    # It is exactly the prediction as of the instant it was made.
    again = await prediction_as_of(client, "shopper", after["as_of"])
    assert without_scored_at(again) == without_scored_at(after)
    assert parse_as_of(after["as_of"]) >= parse_as_of(order["occurred_at"])

    # Without score=true nothing extra comes back; a duplicate with score=true answers 200.
    plain = await client.post("/v1/events", json=event("page_view", customer_id="shopper"))
    assert set(plain.json()) == {"status", "event"}
    duplicate = await client.post("/v1/events?score=true", json=order)
    assert duplicate.status_code == 200
    assert duplicate.json()["status"] == "duplicate"
    assert duplicate.json()["prediction"]["customer_id"] == "shopper"


async def test_batch_with_score_returns_one_prediction_per_stored_customer(
    client: httpx.AsyncClient,
) -> None:
    events = [
        event("order", customer_id="b-1", occurred_at=recently(3)),
        event("session", customer_id="b-2", occurred_at=recently(3)),
        event("order", customer_id="b-1", occurred_at=recently(2), amount="99.00"),
        event("add_to_cart", customer_id="b-3", occurred_at=recently(2), amount="5.00"),  # rejected
        event("product_view", customer_id="b-2", occurred_at=recently(1)),
        event("order", customer_id="b-4", occurred_at=recently(1)),
    ]
    first = await client.post("/v1/events/batch?score=true", json={"events": events})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["rejected"]) == (5, 1)
    predictions = body["predictions"]
    # One per distinct customer with a stored item, in first-seen order; none for b-3.
    assert [p["customer_id"] for p in predictions] == ["b-1", "b-2", "b-4"]
    assert "prediction_error" not in body
    for p in predictions:
        again = await prediction_as_of(client, p["customer_id"], p["as_of"])
        assert without_scored_at(again) == without_scored_at(p)
    stages = {p["customer_id"]: p["segment"]["lifecycle_stage"] for p in predictions}
    assert stages == {"b-1": "new", "b-2": "prospect", "b-4": "new"}
    # Resending: duplicates are stored customers too, so they are scored again.
    resent = await client.post("/v1/events/batch?score=true", json={"events": events[:2]})
    assert resent.json()["duplicates"] == 2
    assert [p["customer_id"] for p in resent.json()["predictions"]] == ["b-1", "b-2"]
    # Nothing stored: an empty list, not an error.
    rejected = await client.post("/v1/events/batch?score=true", json={"events": [events[3]]})
    assert rejected.json()["predictions"] == []


async def test_without_a_model_events_are_stored_and_the_reason_is_given(
    settings: Settings, tmp_path: Path
) -> None:
    unmodelled = settings.model_copy(update={"model_dir": tmp_path})
    async with app_client(unmodelled) as client:
        one = await client.post(
            "/v1/events?score=true",
            json=event("order", customer_id="nm-1", occurred_at=recently(1)),
        )
        assert one.status_code == 201, one.text
        ack = one.json()
        assert ack["status"] == "created"
        assert "prediction" not in ack
        assert "no model is loaded" in ack["prediction_error"]
        assert "clv train" in ack["prediction_error"]
        batch = await client.post(
            "/v1/events/batch?score=true",
            json={"events": [event("session", customer_id="nm-2", occurred_at=recently(1))]},
        )
        assert batch.status_code == 200
        assert batch.json()["created"] == 1
        assert "predictions" not in batch.json()
        assert "no model is loaded" in batch.json()["prediction_error"]
        # Both events are stored.
        for customer in ("nm-1", "nm-2"):
            read = await client.get(f"/v1/customers/{customer}")
            assert read.status_code == 200
            assert read.json()["summary"]["event_count"] == 1


async def test_an_event_slightly_ahead_of_the_server_clock_is_in_its_prediction(
    client: httpx.AsyncClient,
) -> None:
    # A storefront whose clock runs a minute fast: the event is accepted (skew <= 300 s) ...
    order = event("order", customer_id="fast-clock", occurred_at=shortly(60))
    response = await client.post("/v1/events?score=true", json=order)
    assert response.status_code == 201, response.text
    # ... so its prediction must count the order: a first order makes the customer new.
    assert response.json()["prediction"]["segment"]["lifecycle_stage"] == "new"
    batch = await client.post(
        "/v1/events/batch?score=true",
        json={"events": [event("order", customer_id="fast-clock-2", occurred_at=shortly(60))]},
    )
    assert batch.json()["created"] == 1
    [prediction] = batch.json()["predictions"]
    assert prediction["segment"]["lifecycle_stage"] == "new"
