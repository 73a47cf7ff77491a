"""A smoke subset on the embedded SQLite default (what `make run` uses)."""

from __future__ import annotations

import httpx

from tests.factories import event


async def test_ingest_read_page_and_erase_on_sqlite(sqlite_client: httpx.AsyncClient) -> None:
    order = event(
        "order", customer_id="s1", amount="12.34", occurred_at="2026-01-02T03:04:05+02:00"
    )
    assert (await sqlite_client.post("/v1/events", json=order)).status_code == 201
    assert (await sqlite_client.post("/v1/events", json=order)).status_code == 200
    assert (
        await sqlite_client.post("/v1/events", json={**order, "amount": "1.00"})
    ).status_code == 409
    batch = [event("page_view", customer_id="s1") for _ in range(3)] + [{"type": "nope"}]
    result = (await sqlite_client.post("/v1/events/batch", json={"events": batch})).json()
    assert (result["created"], result["rejected"]) == (3, 1)
    customer = (await sqlite_client.get("/v1/customers/s1")).json()
    assert customer["summary"]["order_count"] == 1
    assert customer["summary"]["net_revenue"] == "12.34"
    assert customer["summary"]["first_order_at"] == "2026-01-02T01:04:05Z"
    page = (await sqlite_client.get("/v1/customers/s1/events", params={"limit": 2})).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"]
    assert (await sqlite_client.put("/v1/customers/s1", json={"country": "NL"})).status_code == 200
    erased = (await sqlite_client.delete("/v1/customers/s1")).json()
    assert erased["deleted"] == {"customers": 1, "events": 4, "scores": 0}
    assert (await sqlite_client.get("/v1/customers/s1")).status_code == 404
