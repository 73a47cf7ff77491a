"""Customer profiles, summaries, event pages and erasure."""

from __future__ import annotations

import httpx

from tests.factories import event


async def test_put_creates_then_replaces(client: httpx.AsyncClient) -> None:
    profile = {
        "signup_at": "2025-05-01T08:00:00+02:00",
        "country": "DE",
        "acquisition_channel": "email",
        "attributes": {"vip": True},
    }
    created = await client.put("/v1/customers/alice", json=profile)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["signup_at"] == "2025-05-01T06:00:00Z"
    assert body["country"] == "DE"
    assert body["attributes"] == {"vip": True}
    replaced = await client.put("/v1/customers/alice", json={"country": "FR"})
    assert replaced.status_code == 200
    assert replaced.json()["country"] == "FR"
    assert replaced.json()["acquisition_channel"] is None  # PUT replaces the whole profile
    assert replaced.json()["attributes"] == {}


async def test_profile_validation(client: httpx.AsyncClient) -> None:
    for body, field in (
        ({"country": "germany"}, "country"),
        ({"signup_at": "2025-05-01T08:00:00"}, "signup_at"),
        ({"nickname": "x"}, "nickname"),
        ({"attributes": {"x": "y" * 9000}}, "attributes"),
    ):
        response = await client.put("/v1/customers/bob", json=body)
        assert response.status_code == 422, body
        assert field in [e["field"] for e in response.json()["errors"]]
    bad_id = await client.put("/v1/customers/bad%20id", json={})
    assert bad_id.status_code == 422
    assert bad_id.json()["errors"][0]["field"] == "customer_id"


async def test_put_keeps_the_events_of_a_customer_created_by_ingestion(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/events", json=event("order", customer_id="carol"))
    response = await client.put("/v1/customers/carol", json={"country": "US"})
    assert response.status_code == 200
    assert response.json()["summary"]["order_count"] == 1


async def test_summary_counts_orders_and_nets_refunds(client: httpx.AsyncClient) -> None:
    events = [
        event("session", customer_id="dave", occurred_at="2026-01-01T09:00:00Z"),
        event("order", customer_id="dave", amount="100.00", occurred_at="2026-01-01T10:00:00Z"),
        event("order", customer_id="dave", amount="50.50", occurred_at="2026-02-01T10:00:00Z"),
        event("refund", customer_id="dave", amount="20.25", occurred_at="2026-02-03T10:00:00Z"),
    ]
    await client.post("/v1/events/batch", json={"events": events})
    summary = (await client.get("/v1/customers/dave")).json()["summary"]
    assert summary["order_count"] == 2
    assert summary["event_count"] == 4
    assert summary["gross_revenue"] == "150.50"
    assert summary["refunded"] == "20.25"
    assert summary["net_revenue"] == "130.25"
    assert summary["first_event_at"] == "2026-01-01T09:00:00Z"
    assert summary["last_event_at"] == "2026-02-03T10:00:00Z"
    assert summary["first_order_at"] == "2026-01-01T10:00:00Z"
    assert summary["last_order_at"] == "2026-02-01T10:00:00Z"
    assert summary["currency"] == "USD"


async def test_unknown_customer_is_404_problem(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/v1/customers/nobody"),
        ("GET", "/v1/customers/nobody/events"),
        ("DELETE", "/v1/customers/nobody"),
    ):
        response = await client.request(method, path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert "nobody" in response.json()["detail"]


async def test_cursor_pagination_walks_every_event_once_newest_first(
    client: httpx.AsyncClient,
) -> None:
    # 23 events, several sharing a timestamp, so the (occurred_at, id) tie-break matters.
    stamps = [f"2026-01-{1 + i // 3:02d}T10:00:00Z" for i in range(23)]
    events = [event("page_view", customer_id="erin", occurred_at=s) for s in stamps]
    await client.post("/v1/events/batch", json={"events": events})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/customers/erin/events", params=params)).json()
        seen += [e["event_id"] for e in page["items"]]
        times = [e["occurred_at"] for e in page["items"]]
        assert times == sorted(times, reverse=True)
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert sorted(seen) == sorted(e["event_id"] for e in events)
    assert len(seen) == len(set(seen))


async def test_bad_cursor_is_422(client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json=event("search", customer_id="frank"))
    response = await client.get("/v1/customers/frank/events", params={"cursor": "garbage!"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


async def test_erasure_removes_everything_and_reports_counts(client: httpx.AsyncClient) -> None:
    await client.put("/v1/customers/gina", json={"country": "IT"})
    await client.post(
        "/v1/events/batch", json={"events": [event("order", customer_id="gina") for _ in range(4)]}
    )
    await client.post("/v1/events", json=event("order", customer_id="other"))
    erased = await client.delete("/v1/customers/gina")
    assert erased.status_code == 200
    assert erased.json() == {
        "customer_id": "gina",
        "deleted": {"customers": 1, "events": 4, "scores": 0},
    }
    assert (await client.get("/v1/customers/gina")).status_code == 404
    assert (await client.delete("/v1/customers/gina")).status_code == 404
    assert (await client.get("/v1/customers/other")).json()["summary"]["order_count"] == 1


async def test_events_after_erasure_start_a_new_customer(client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json=event("order", customer_id="hank"))
    await client.delete("/v1/customers/hank")
    await client.post("/v1/events", json=event("order", customer_id="hank", amount="5.00"))
    summary = (await client.get("/v1/customers/hank")).json()["summary"]
    assert summary["order_count"] == 1
    assert summary["gross_revenue"] == "5.00"
