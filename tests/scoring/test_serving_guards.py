"""What a prediction rests on, and where it stops: history basis, future as_of, training ranges."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.artifacts import promote
from app.config import Settings
from app.features.definitions import FEATURE_NAMES, parse_as_of
from tests.conftest import app_client
from tests.factories import event
from tests.scoring.support import AS_OF, add_version, assert_problem, offline_matrix

CUSTOMER = "cust-basis"


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def prediction(client: httpx.AsyncClient, customer: str, **params: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{customer}/prediction", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- basis ---------------------------------------------------------------------------------------


async def test_basis_follows_the_history_a_customer_has(client: httpx.AsyncClient) -> None:
    created = await client.put(f"/v1/customers/{CUSTOMER}", json={"attributes": {"plan": "x"}})
    assert created.status_code == 201, created.text
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    # A profile and nothing else: the numbers are the model's prior, and the answer says so.
    empty = await prediction(client, CUSTOMER)
    assert empty["basis"] == "no_history"
    assert "no events" in empty["notice"]
    assert "not a forecast" in empty["notice"]
    assert empty["segment"]["lifecycle_stage"] == "prospect"
    batch = await client.post("/v1/predictions/batch", json={"customer_ids": [CUSTOMER]})
    [item] = batch.json()["results"]
    assert item["prediction"]["basis"] == "no_history"
    assert item["prediction"]["notice"] == empty["notice"]

    # Behaviour without an order.
    view = event("product_view", customer_id=CUSTOMER, occurred_at=iso(now - dt.timedelta(days=2)))
    scored = await client.post("/v1/events", params={"score": "true"}, json=view)
    assert scored.status_code == 201, scored.text
    assert scored.json()["prediction"]["basis"] == "no_orders"
    assert "notice" not in scored.json()["prediction"]

    # An order: the prediction rests on order history.
    order = event("order", customer_id=CUSTOMER, occurred_at=iso(now - dt.timedelta(days=1)))
    batch_scored = await client.post(
        "/v1/events/batch", params={"score": "true"}, json={"events": [order]}
    )
    assert batch_scored.status_code == 200, batch_scored.text
    [after] = batch_scored.json()["predictions"]
    assert after["basis"] == "history"
    assert "notice" not in after
    # As of before every event, the same customer has no history again.
    before = await prediction(client, CUSTOMER, as_of=iso(now - dt.timedelta(days=5)))
    assert before["basis"] == "no_history"


async def test_the_demo_customers_have_the_basis_their_features_say(
    demo_client: httpx.AsyncClient, demo_settings: Settings
) -> None:
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    orders = FEATURE_NAMES.index("orders")
    ids = matrix.customer_ids
    response = await demo_client.post(
        "/v1/predictions/batch", json={"customer_ids": ids, "as_of": AS_OF}
    )
    results = response.json()["results"]
    bases = {r["customer_id"]: r["prediction"]["basis"] for r in results}
    expected = {
        customer: "history" if matrix.values[i, orders] > 0 else "no_orders"
        for i, customer in enumerate(ids)
    }
    assert bases == expected
    assert set(bases.values()) == {"history", "no_orders"}  # the demo has prospects


# --- as_of in the future -------------------------------------------------------------------------


def assert_as_of_rejected(response: httpx.Response, pointer: str, code: str) -> dict[str, Any]:
    problem = assert_problem(response, 422, "validation")
    [error] = problem["errors"]
    assert (error["field"], error["pointer"], error["code"]) == ("as_of", pointer, code)
    return problem


@pytest.mark.parametrize(
    "path", [f"/v1/customers/{CUSTOMER}/prediction", f"/v1/customers/{CUSTOMER}/features"]
)
async def test_as_of_beyond_the_allowed_skew_is_rejected(
    client: httpx.AsyncClient, settings: Settings, path: str
) -> None:
    await client.put(f"/v1/customers/{CUSTOMER}", json={})
    now = dt.datetime.now(dt.UTC)
    skew = settings.max_future_skew_seconds
    for too_late in ("2030-01-01T00:00:00Z", iso(now + dt.timedelta(seconds=skew + 120))):
        problem = assert_as_of_rejected(
            await client.get(path, params={"as_of": too_late}), "#query/as_of", "as_of_in_future"
        )
        assert "in the future" in problem["errors"][0]["message"]
        assert f"{skew} s" in problem["errors"][0]["message"]
    tomorrow = (now + dt.timedelta(days=1)).date().isoformat()
    assert_as_of_rejected(
        await client.get(path, params={"as_of": tomorrow}), "#query/as_of", "as_of_in_future"
    )
    # Within the skew, and today as a date (up to its end), are fine.
    within = iso(now + dt.timedelta(seconds=skew // 2))
    assert (await client.get(path, params={"as_of": within})).status_code == 200
    assert (await client.get(path, params={"as_of": now.date().isoformat()})).status_code == 200


async def test_the_cap_is_a_setting(settings: Settings) -> None:
    wide = settings.model_copy(update={"max_future_skew_seconds": 3 * 86_400})
    async with app_client(wide) as client:
        await client.put(f"/v1/customers/{CUSTOMER}", json={})
        soon = iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
        response = await client.get(f"/v1/customers/{CUSTOMER}/prediction", params={"as_of": soon})
        assert response.status_code == 200, response.text


async def test_batch_as_of_in_the_future_names_the_body_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/predictions/batch", json={"customer_ids": [CUSTOMER], "as_of": "2030-06-30"}
    )
    assert_as_of_rejected(response, "/as_of", "as_of_in_future")


async def test_an_unencoded_plus_in_as_of_says_to_encode_it(client: httpx.AsyncClient) -> None:
    # A raw '+' in a query string is a space once decoded.
    response = await client.get(
        f"/v1/customers/{CUSTOMER}/prediction?as_of=2026-03-15T12:00:00+01:00"
    )
    problem = assert_as_of_rejected(response, "#query/as_of", "plus_not_encoded")
    assert "%2B" in problem["errors"][0]["message"]
    # Encoded, it is an ordinary instant (and this customer simply does not exist).
    encoded = await client.get(
        f"/v1/customers/{CUSTOMER}/prediction", params={"as_of": "2026-03-15T12:00:00+01:00"}
    )
    assert_problem(encoded, 404, "not-found")


# --- training ranges -----------------------------------------------------------------------------

OUT_OF_RANGE = re.compile(r'^clv_feature_out_of_range_total\{feature="([a-z0-9_]+)"\} (\S+)$', re.M)


async def out_of_range_counts(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {name: float(value) for name, value in OUT_OF_RANGE.findall(text)}


async def test_features_outside_the_training_range_are_counted_and_flagged(
    demo_settings: Settings, private_models: Path
) -> None:
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    orders, tenure = FEATURE_NAMES.index("orders"), FEATURE_NAMES.index("tenure_days")
    buyers = [i for i in range(len(matrix)) if matrix.values[i, orders] >= 2]
    customer_index = buyers[0]
    customer = matrix.customer_ids[customer_index]
    row = matrix.values[customer_index]
    # Ranges that this customer's order count and tenure exceed, and that hold every other value.
    ranges = {name: [-1e12, 1e12] for name in FEATURE_NAMES}
    ranges["orders"] = [0.0, float(row[orders]) - 1]
    ranges["tenure_days"] = [float(row[tenure]) + 1, 1e12]
    add_version(private_models, "ranged", feature_ranges=ranges)
    promote(private_models, "ranged")
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    async with app_client(settings) as client:
        before = await out_of_range_counts(client)
        explained = await prediction(client, customer, as_of=AS_OF, explain="true")
        flags = explained["explanation"]["out_of_range"]
        assert [f["feature"] for f in flags] == ["tenure_days", "orders"]  # feature order
        assert flags[1] == {
            "feature": "orders",
            "value": row[orders],
            "training_min": 0.0,
            "training_max": row[orders] - 1,
        }
        await prediction(client, customer, as_of=AS_OF)
        batch = await client.post(
            "/v1/predictions/batch", json={"customer_ids": [customer] * 3, "as_of": AS_OF}
        )
        assert batch.status_code == 200
        after = await out_of_range_counts(client)
        # Single (twice) and one batch row (ids are deduplicated): three predictions each.
        for name in ("orders", "tenure_days"):
            assert after[name] - before.get(name, 0.0) == 3, (name, before, after)
        assert {k for k, v in after.items() if v != before.get(k, 0.0)} == {"orders", "tenure_days"}


async def test_a_manifest_without_ranges_flags_nothing(
    demo_settings: Settings, private_models: Path
) -> None:
    add_version(private_models, "no-ranges", feature_ranges={})
    promote(private_models, "no-ranges")
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    customer = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids[3]
    async with app_client(settings) as client:
        before = await out_of_range_counts(client)
        explained = await prediction(client, customer, as_of=AS_OF, explain="true")
        assert explained["explanation"]["out_of_range"] == []
        assert await out_of_range_counts(client) == before
