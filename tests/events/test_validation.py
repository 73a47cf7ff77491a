"""Every validation rule of POST /v1/events answers 422 problem+json naming the field."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.factories import event

PROBLEM = "application/problem+json"


def now_plus(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


async def assert_rejected(client: httpx.AsyncClient, body: Any, field: str) -> dict[str, Any]:
    response = await client.post("/v1/events", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == 422
    assert problem["type"].endswith("/validation")
    fields = [e["field"] for e in problem["errors"]]
    assert field in fields, problem
    return problem


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": "has space"}, "event_id"),
        ({"event_id": "semi;colon"}, "event_id"),
        ({"event_id": 123}, "event_id"),
        ({"event_id": ...}, "event_id"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "ü-nicode"}, "customer_id"),
        ({"customer_id": "c" * 129}, "customer_id"),
        ({"occurred_at": "2026-01-01T10:00:00"}, "occurred_at"),  # naive
        ({"occurred_at": "2026-01-01"}, "occurred_at"),
        ({"occurred_at": 1767261600}, "occurred_at"),  # epoch number, not RFC 3339
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "1989-12-31T23:59:59Z"}, "occurred_at"),
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at"),
        ({"amount": "0.001"}, "amount"),
        ({"amount": "-5.00"}, "amount"),
        ({"amount": "1000000000.00"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "ten"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": ...}, "amount"),
        ({"currency": ...}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"currency": "EUR"}, "currency"),  # valid ISO 4217 but not the shop's currency
        ({"order_id": "bad id"}, "order_id"),
        ({"type": "click"}, "type"),
        ({"unexpected": 1}, "unexpected"),
        ({"properties": [1, 2]}, "properties"),
        ({"properties": {"blob": "x" * 9000}}, "properties"),
    ],
)
async def test_order_field_rules(
    client: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    await assert_rejected(client, event("order", **overrides), field)


async def test_unknown_type_lists_the_allowed_types(client: httpx.AsyncClient) -> None:
    problem = await assert_rejected(client, event("order", type="purchase"), "type")
    message = problem["errors"][0]["message"]
    for allowed in (
        "order",
        "refund",
        "session",
        "page_view",
        "product_view",
        "add_to_cart",
        "checkout_start",
        "search",
    ):
        assert f"'{allowed}'" in message


async def test_future_timestamps_are_bounded(client: httpx.AsyncClient) -> None:
    await assert_rejected(client, event("page_view", occurred_at=now_plus(400)), "occurred_at")
    accepted = await client.post("/v1/events", json=event("page_view", occurred_at=now_plus(120)))
    assert accepted.status_code == 201, accepted.text


async def test_refund_needs_a_positive_amount(client: httpx.AsyncClient) -> None:
    await assert_rejected(client, event("refund", amount="0"), "amount")
    ok = await client.post("/v1/events", json=event("refund", amount="0.01"))
    assert ok.status_code == 201


async def test_a_free_order_is_accepted(client: httpx.AsyncClient) -> None:
    # CDNOW and real shops have zero-value orders (full discounts); they are purchases.
    response = await client.post("/v1/events", json=event("order", amount="0.00"))
    assert response.status_code == 201, response.text
    assert response.json()["event"]["amount"] == "0.00"


@pytest.mark.parametrize(
    "kind", ["session", "page_view", "product_view", "add_to_cart", "checkout_start", "search"]
)
async def test_behaviour_events_carry_no_money(client: httpx.AsyncClient, kind: str) -> None:
    await assert_rejected(client, event(kind, amount="1.00", currency="USD"), "amount")
    await assert_rejected(client, event(kind, currency="USD"), "currency")
    ok = await client.post("/v1/events", json=event(kind))
    assert ok.status_code == 201, ok.text


async def test_properties_depth_is_limited(client: httpx.AsyncClient) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(12):
        node["k"] = {}
        node = node["k"]
    await assert_rejected(client, event("page_view", properties=deep), "properties")


async def test_amount_accepts_number_and_string(client: httpx.AsyncClient) -> None:
    as_number = await client.post("/v1/events", json=event("order", amount=19.99))
    as_string = await client.post("/v1/events", json=event("order", amount="19.9"))
    assert as_number.json()["event"]["amount"] == "19.99"
    assert as_string.json()["event"]["amount"] == "19.90"


async def test_offsets_are_normalised_to_utc(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events", json=event("session", occurred_at="2026-03-01T01:30:00+02:00")
    )
    assert response.json()["event"]["occurred_at"] == "2026-02-28T23:30:00Z"


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events", content=b'{"event_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = event("page_view", properties={"x": "y" * 1_100_000})
    response = await client.post("/v1/events", json=big)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 413


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def stream() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 32_768

    response = await client.post(
        "/v1/events", content=stream(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_nothing_is_stored_for_rejected_events(client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json=event("order", customer_id="ghost", amount="-1"))
    assert (await client.get("/v1/customers/ghost")).status_code == 404


# --- errors a developer meets in the first hour ---------------------------------------------------


def assert_unsupported_media_type(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == 415
    assert problem["type"].endswith("/unsupported-media-type")
    assert "Content-Type: application/json" in problem["detail"]
    return problem


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch", "/v1/predictions/batch"])
async def test_a_form_encoded_body_is_415_naming_the_content_type(
    client: httpx.AsyncClient, path: str
) -> None:
    # What `curl -d 'customer_id=cust-1'` sends.
    response = await client.post(path, data={"customer_id": "cust-1", "type": "order"})
    problem = assert_unsupported_media_type(response)
    assert "application/x-www-form-urlencoded" in problem["detail"]


async def test_json_sent_as_text_plain_is_415(client: httpx.AsyncClient) -> None:
    body = json.dumps({"events": [event("order")]}).encode()
    response = await client.post(
        "/v1/events/batch", content=body, headers={"content-type": "text/plain"}
    )
    problem = assert_unsupported_media_type(response)
    assert "text/plain" in problem["detail"]
    # Nothing was stored.
    assert (await client.get(f"/v1/customers/{event('order')['customer_id']}")).status_code == 404


async def test_a_body_without_content_type_is_415(client: httpx.AsyncClient) -> None:
    body = json.dumps(event("order")).encode()
    response = await client.post("/v1/events", content=body)  # httpx adds no Content-Type
    problem = assert_unsupported_media_type(response)
    assert "no Content-Type" in problem["detail"]


async def test_json_with_a_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events",
        content=json.dumps(event("order")).encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201, response.text


async def test_a_bare_list_to_the_batch_endpoint_states_the_expected_shape(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/events/batch", json=[event("order")])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert '{"events": [...]}' in problem["detail"]
    assert "not an array" in problem["detail"]
    assert [(e["field"], e["pointer"], e["code"]) for e in problem["errors"]] == [
        ("body", "", "object_type")
    ]
    assert "valid dictionary" not in response.text


async def test_a_string_body_to_the_event_endpoint_names_the_required_fields(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/events", json="order")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for field in ("event_id", "customer_id", "type", "occurred_at"):
        assert f'"{field}"' in detail, detail
    assert "not a string" in detail


@pytest.mark.parametrize(
    ("raw", "line", "column"),
    [
        (b'{"event_id": ', 1, 14),
        (b'{\n  "event_id": "e-1",\n  "customer_id": "c-1",,\n}', 3, 24),
        (b'{"events": [ {"a": 1} ]', 1, 24),
    ],
)
async def test_invalid_json_is_a_syntax_error_at_line_and_column(
    client: httpx.AsyncClient, raw: bytes, line: int, column: int
) -> None:
    response = await client.post(
        "/v1/events/batch", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"].endswith("/malformed-json")
    assert f"JSON syntax error at line {line}, column {column}" in problem["detail"]
    [error] = problem["errors"]
    # The byte offset is no longer posing as a field name.
    assert (error["field"], error["pointer"], error["code"]) == ("body", "", "json_invalid")
    assert error["message"] == problem["detail"]


async def test_form_415_is_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, method in [
        ("/v1/events", "post"),
        ("/v1/events/batch", "post"),
        ("/v1/predictions/batch", "post"),
        ("/v1/customers/{customer_id}", "put"),
    ]:
        assert "415" in spec["paths"][path][method]["responses"], path
