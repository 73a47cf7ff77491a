"""Inputs never reach the logs verbatim: a real server at CLV_LOG_LEVEL=debug is sent marker
strings in bodies, event properties, profile attributes, query strings, customer ids (paths),
event and order ids and credentials, on successes and on every kind of refusal; none of them
appears in what the server printed, while its access lines (route templates) are all there."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.config import Settings
from app.customers.repository import CustomerRepository
from tests.conftest import api_key, captured_logs
from tests.factories import event
from tests.security.support import serving
from tests.server import server_env


@pytest.mark.slow
def test_no_input_reaches_the_logs_even_at_debug(settings: Settings, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    marker = {
        name: f"mk{tag}{name}"
        for name in (
            "customer",
            "event",
            "order",
            "propkey",
            "propvalue",
            "channel",
            "attribute",
            "cursor",
            "asof",
            "unknown",
            "invalid",
            "tier",
            "path",
            "secret",
        )
    }
    key = api_key(settings.database_url)
    customer = marker["customer"]
    order = event(
        "order",
        event_id=marker["event"],
        customer_id=customer,
        order_id=marker["order"],
        properties={marker["propkey"]: marker["propvalue"]},
    )
    # The most verbose level there is: every logger the service configures is open (the SQL
    # drivers' stay capped at WARNING by design, see app.observability.logs).
    env = {**server_env(settings, auth=True), "CLV_LOG_LEVEL": "debug"}
    log = tmp_path / "server.log"
    with serving(env, log) as server:
        http = httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        answers = [
            http.post("/v1/events?score=true", json=order),  # 201
            http.post("/v1/events", json={**order, "amount": "1.00"}),  # 409: id reused
            http.post("/v1/events", json={**order, "currency": marker["invalid"]}),  # 422
            http.post(
                "/v1/events/batch",
                json={
                    "events": [
                        {**order, "event_id": marker["event"] + "b"},
                        {**order, "type": marker["invalid"]},
                    ]
                },
            ),
            http.put(
                f"/v1/customers/{customer}",
                json={
                    "acquisition_channel": marker["channel"],
                    "attributes": {marker["attribute"]: marker["attribute"]},
                },
            ),
            http.put(f"/v1/customers/{customer}", json={"country": marker["invalid"]}),  # 422
            http.get(f"/v1/customers/{customer}"),
            http.get(f"/v1/customers/{customer}/events", params={"cursor": marker["cursor"]}),
            http.get(f"/v1/customers/{customer}/prediction", params={"explain": "true"}),
            http.get(f"/v1/customers/{customer}/prediction", params={"as_of": marker["asof"]}),
            http.get(f"/v1/customers/{customer}/features"),
            http.get(f"/v1/customers/{marker['unknown']}"),  # 404
            http.post(
                "/v1/predictions/batch", json={"customer_ids": [customer, marker["unknown"]]}
            ),
            http.post(
                "/v1/predictions/batch", json={"customer_ids": [customer], "as_of": marker["asof"]}
            ),
            http.get("/v1/segments/active", params={"value_tier": marker["tier"]}),  # 422
            http.get(f"/v1/{marker['path']}", params={"q": marker["invalid"]}),  # 404 unmatched
            http.post(
                "/v1/events",
                content=b'{"event_id": "' + marker["invalid"].encode() + b'", ',
                headers={"content-type": "application/json"},
            ),  # malformed JSON
            http.post(
                "/v1/events",
                json={**order, "properties": {"blob": marker["propvalue"] * 100_000}},
            ),  # 413
            httpx.get(
                f"{server.base}/v1/customers/{customer}",
                headers={"Authorization": f"Bearer clv_{marker['secret']}"},
            ),  # 401
            http.delete(f"/v1/customers/{customer}"),
        ]
        http.close()
    statuses = [a.status_code for a in answers]
    assert statuses == [
        201, 409, 422, 200, 200, 422, 200, 422, 200, 422, 200, 404, 200, 422, 422, 404, 422, 413,
        401, 200,
    ]  # fmt: skip
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    routes = {line.get("route") for line in lines if line["logger"] == "clv.access"}
    assert {
        "/v1/events",
        "/v1/events/batch",
        "/v1/customers/{customer_id}",
        "/v1/customers/{customer_id}/events",
        "/v1/customers/{customer_id}/prediction",
        "/v1/predictions/batch",
        "<unmatched>",
    } <= routes
    assert len([line for line in lines if line["logger"] == "clv.access"]) >= len(answers)
    leaked = sorted(name for name, value in marker.items() if value in text)
    assert not leaked, f"logged verbatim: {leaked}"
    assert key not in text
    assert tag not in text  # not even a fragment of a marker


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What the service logs during the test, at debug level."""
    with captured_logs(logging.DEBUG) as stream:
        yield stream


async def test_a_failing_statement_logs_neither_its_parameters_nor_the_raw_path(
    client: httpx.AsyncClient, logged: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"mk{uuid.uuid4().hex}"

    async def failing_put(self: CustomerRepository, *_: Any) -> Any:
        # A statement that fails in Postgres with a value from the request bound to it.
        await self.session.execute(text("SELECT 1 / (0 * length(:note))"), {"note": marker})

    monkeypatch.setattr(CustomerRepository, "put_profile", failing_put)
    response = await client.put(f"/v1/customers/{marker}-id", json={"attributes": {}})
    assert response.status_code == 500
    output = logged.getvalue()
    [error] = [json.loads(line) for line in output.splitlines() if '"level":"error"' in line]
    assert error["error"]["type"] == "DBAPIError"
    assert "division by zero" in error["error"]["message"]  # the cause is still there
    assert "/v1/customers/{customer_id}" in error["message"]  # the route, not the path
    assert marker not in output
