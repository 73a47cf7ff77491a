"""Idempotent single and batch ingestion on Postgres."""

from __future__ import annotations

import httpx
from sqlalchemy import create_engine, func, select, text

from app.config import Settings
from app.db import sync_url
from app.events.models import Event
from tests.conftest import bearer
from tests.factories import event


def stored_count(settings: Settings, event_id: str | None = None) -> int:
    engine = create_engine(sync_url(settings.database_url))
    query = select(func.count()).select_from(Event)
    if event_id is not None:
        query = query.where(Event.event_id == event_id)
    with engine.connect() as connection:
        count = connection.execute(query).scalar_one()
    engine.dispose()
    return int(count)


async def test_first_post_creates(client: httpx.AsyncClient, settings: Settings) -> None:
    body = event("order", amount="59.90", properties={"items": 2})
    response = await client.post("/v1/events", json=body)
    assert response.status_code == 201
    ack = response.json()
    assert ack["status"] == "created"
    assert ack["event"]["event_id"] == body["event_id"]
    assert ack["event"]["amount"] == "59.90"
    assert ack["event"]["properties"] == {"items": 2}
    assert stored_count(settings, body["event_id"]) == 1


async def test_identical_repost_is_a_duplicate_without_a_second_row(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = event("order")
    first = await client.post("/v1/events", json=body)
    again = await client.post("/v1/events", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["status"] == "duplicate"
    assert again.json()["event"]["received_at"] == first.json()["event"]["received_at"]
    assert stored_count(settings, body["event_id"]) == 1


async def test_same_instant_in_another_offset_is_still_a_duplicate(
    client: httpx.AsyncClient,
) -> None:
    body = event("session", occurred_at="2026-01-05T12:00:00Z")
    await client.post("/v1/events", json=body)
    shifted = {**body, "occurred_at": "2026-01-05T13:00:00+01:00"}
    assert (await client.post("/v1/events", json=shifted)).status_code == 200


async def test_reused_id_with_other_content_is_409(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = event("order", amount="10.00")
    await client.post("/v1/events", json=body)
    for change in ({"amount": "10.01"}, {"customer_id": "someone-else"}, {"properties": {"a": 1}}):
        response = await client.post("/v1/events", json={**body, **change})
        assert response.status_code == 409, change
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/conflict")
    assert stored_count(settings, body["event_id"]) == 1
    stored = (await client.get(f"/v1/customers/{body['customer_id']}/events")).json()["items"]
    assert [e["amount"] for e in stored] == ["10.00"]


async def test_batch_stores_valid_items_and_rejects_the_rest(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    good = [event("order", customer_id=f"b-{i}") for i in range(3)]
    bad_type = event("order", type="bogus")
    bad_amount = event("order", amount="1.234")
    not_an_object = "just a string"
    items = [good[0], bad_type, good[1], bad_amount, not_an_object, good[2]]
    response = await client.post("/v1/events/batch", json={"events": items})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["created"], result["duplicates"], result["rejected"]) == (3, 0, 3)
    statuses = [(r["index"], r["status"]) for r in result["results"]]
    assert statuses == [
        (0, "created"),
        (1, "rejected"),
        (2, "created"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "created"),
    ]
    assert result["results"][1]["error"]["errors"][0]["field"] == "events.1.type"
    assert result["results"][3]["error"]["errors"][0]["pointer"] == "/events/3/amount"
    assert result["results"][1]["event_id"] == bad_type["event_id"]
    assert stored_count(settings) == 3


async def test_batch_duplicates_and_conflicts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    earlier = event("order")
    await client.post("/v1/events", json=earlier)
    fresh = event("page_view")
    items = [
        earlier,  # stored before -> duplicate
        {**earlier, "amount": "99.00"},  # stored before with other content -> conflict
        fresh,
        fresh,  # repeated within the batch -> duplicate
        {**fresh, "type": "search"},  # same id, other content within the batch -> conflict
    ]
    result = (await client.post("/v1/events/batch", json={"events": items})).json()
    assert [r["status"] for r in result["results"]] == [
        "duplicate",
        "rejected",
        "created",
        "duplicate",
        "rejected",
    ]
    assert result["results"][1]["error"]["type"].endswith("/conflict")
    assert stored_count(settings) == 2


async def test_batch_size_limit(settings: Settings) -> None:
    tiny = Settings(database_url=settings.database_url, max_batch_events=5)
    from app.main import create_app

    app = create_app(tiny)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = bearer(settings.database_url)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as limited:
            over = await limited.post(
                "/v1/events/batch", json={"events": [event("search") for _ in range(6)]}
            )
            at = await limited.post(
                "/v1/events/batch", json={"events": [event("search") for _ in range(5)]}
            )
    assert over.status_code == 422
    assert over.json()["errors"][0]["field"] == "events"
    assert at.status_code == 200
    assert at.json()["created"] == 5


async def test_empty_batch_is_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events/batch", json={"events": []})
    assert response.status_code == 422


async def test_batch_is_one_transaction_of_set_based_inserts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    # Statement counting via pg_stat_statements is not available; instead check the outcome the
    # set-based path guarantees: one received_at (one transaction's now()) for the whole batch.
    items = [event("product_view", customer_id=f"tx-{i % 7}") for i in range(200)]
    await client.post("/v1/events/batch", json={"events": items})
    engine = create_engine(sync_url(settings.database_url))
    with engine.connect() as connection:
        stamps = connection.execute(
            text("SELECT count(DISTINCT received_at) FROM events")
        ).scalar_one()
    engine.dispose()
    assert stamps == 1
