"""Online predictions: values against the artifact run directly, explanations, batches, as_of."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.artifacts import Calibration, current_version, promote, read_manifest
from app.config import Settings
from app.features.definitions import FEATURE_NAMES, FEATURES, parse_as_of
from app.scoring.lifecycle import lifecycle_stages, value_tiers
from tests.conftest import app_client
from tests.factories import event
from tests.scoring.support import (
    AS_OF,
    EARLIER_AS_OF,
    PREDICTION_FIELDS,
    add_version,
    assert_problem,
    offline_matrix,
    reference_predictions,
    without_scored_at,
)

DESCRIPTIONS = {f.name: f.description for f in FEATURES}


async def batch(client: httpx.AsyncClient, customer_ids: list[str], as_of: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/predictions/batch", json={"customer_ids": customer_ids, "as_of": as_of}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def single(
    client: httpx.AsyncClient, customer_id: str, as_of: str, **params: str
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/customers/{customer_id}/prediction", params={"as_of": as_of, **params}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("as_of", [AS_OF, EARLIER_AS_OF])
async def test_predictions_equal_the_onnx_models_run_on_offline_features(
    demo_client: httpx.AsyncClient, demo_settings: Settings, model_dir: Path, as_of: str
) -> None:
    instant = parse_as_of(as_of)
    matrix = offline_matrix(demo_settings, instant)
    assert len(matrix) > 100
    ref = reference_predictions(model_dir, matrix.values)
    manifest = ref.manifest
    stages = lifecycle_stages(
        matrix.values,
        ref.churn_probability,
        churn_horizon_days=manifest.churn_horizon_days,
        new_customer_days=demo_settings.new_customer_days,
        at_risk_threshold=demo_settings.at_risk_threshold,
    )
    tiers = value_tiers(ref.clv, manifest.clv_quantiles, demo_settings.tier_percentiles)

    body = await batch(demo_client, matrix.customer_ids, as_of)
    assert body["found"] == len(matrix)
    assert body["not_found"] == 0
    predictions = [r["prediction"] for r in body["results"]]
    # A sample through the single-customer endpoint, too (one SQL round trip, one ONNX row).
    sample = set(range(0, len(matrix), 17))
    for i in sorted(sample):
        one = await single(demo_client, matrix.customer_ids[i], as_of)
        assert without_scored_at(one) == without_scored_at(predictions[i])

    for i, p in enumerate(predictions):
        clv, churn = float(ref.clv[i]), float(ref.churn_probability[i])
        assert p["customer_id"] == matrix.customer_ids[i]
        assert p["clv"]["value"] == round(clv, 2), p
        assert p["clv"]["p10"] == round(float(ref.clv_p10[i]), 2), p
        assert p["clv"]["p50"] == round(float(ref.clv_p50[i]), 2), p
        assert p["clv"]["p90"] == round(float(ref.clv_p90[i]), 2), p
        assert p["clv"]["p10"] <= p["clv"]["p50"] <= p["clv"]["p90"], p
        assert p["expected_orders"] == {
            "value": round(float(ref.expected_orders[i]), 4),
            "horizon_days": manifest.clv_horizon_days,
        }, p
        assert p["order_probability"] == {
            "probability": round(float(ref.order_probability[i]), 6),
            "days": manifest.propensity_days,
        }, p
        assert p["churn"]["probability"] == round(churn, 6), p
        # From the unrounded values, not the product of the rounded ones.
        assert p["expected_value_at_risk"] == round(clv * churn, 2), p
        assert p["segment"] == {"lifecycle_stage": stages[i], "value_tier": tiers[i]}
    # The demo data reaches more than one stage and tier, so the comparison above means something.
    assert len(set(stages)) >= 3
    assert len(set(tiers)) == 4


async def test_prediction_document_shape(
    demo_client: httpx.AsyncClient, demo_settings: Settings, model_dir: Path
) -> None:
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    manifest = reference_predictions(model_dir, matrix.values[:1]).manifest
    customer = matrix.customer_ids[0]
    p = await single(demo_client, customer, AS_OF)
    assert set(p) == PREDICTION_FIELDS
    assert p["customer_id"] == customer
    assert parse_as_of(p["as_of"]) == parse_as_of(AS_OF)
    assert p["model_version"] == manifest.version == current_version(model_dir)
    assert set(p["clv"]) == {"value", "currency", "horizon_days", "p10", "p50", "p90"}
    assert set(p["expected_orders"]) == {"value", "horizon_days"}
    assert p["expected_orders"]["horizon_days"] == manifest.clv_horizon_days
    assert set(p["order_probability"]) == {"probability", "days"}
    assert p["order_probability"]["days"] == manifest.propensity_days == 30
    assert 0 <= p["order_probability"]["probability"] <= 1
    assert p["clv"]["currency"] == demo_settings.currency == "USD"
    assert p["clv"]["horizon_days"] == manifest.clv_horizon_days == 180
    assert set(p["churn"]) == {"probability", "horizon_days"}
    assert p["churn"]["horizon_days"] == manifest.churn_horizon_days == 90
    assert 0 <= p["churn"]["probability"] <= 1
    assert p["clv"]["value"] >= 0
    assert set(p["segment"]) == {"lifecycle_stage", "value_tier"}
    assert parse_as_of(p["scored_at"]).tzinfo is not None
    # Without as_of: scored as of now, long after the end of the demo history.
    now = await demo_client.get(f"/v1/customers/{customer}/prediction")
    assert now.status_code == 200
    assert parse_as_of(now.json()["as_of"]) > parse_as_of(AS_OF)


async def test_unknown_customer_is_a_404_problem(demo_client: httpx.AsyncClient) -> None:
    response = await demo_client.get("/v1/customers/nobody-here/prediction")
    body = assert_problem(response, 404, "not-found")
    assert "nobody-here" in body["detail"]


@pytest.mark.parametrize(
    "as_of", ["yesterday", "2026-06-30T12:00:00", "2026-13-01", "1719792000", ""]
)
async def test_bad_as_of_is_a_422_naming_it(demo_client: httpx.AsyncClient, as_of: str) -> None:
    # An unknown customer: the parameter is validated before the lookup.
    response = await demo_client.get(
        "/v1/customers/nobody-here/prediction", params={"as_of": as_of}
    )
    body = assert_problem(response, 422, "validation")
    assert [e["field"] for e in body["errors"]] == ["as_of"]
    assert body["errors"][0]["pointer"] == "#query/as_of"


async def test_an_invalid_customer_id_is_a_422(demo_client: httpx.AsyncClient) -> None:
    response = await demo_client.get("/v1/customers/bad%20id/prediction")
    assert_problem(response, 422, "validation")


# --- explanations -------------------------------------------------------------------------------


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def check_reasons(explanation: dict[str, Any], features: dict[str, float], model: str) -> None:
    contributions: dict[str, float] = explanation["contributions"]
    assert set(contributions) == set(FEATURE_NAMES)
    reasons = explanation["reasons"]
    assert len(reasons) == 5
    sizes = [abs(r["contribution"]) for r in reasons]
    assert sizes == sorted(sizes, reverse=True)
    chosen = {r["feature"] for r in reasons}
    assert len(chosen) == 5
    # The top 5 by absolute contribution: nothing left out is larger than the smallest reason.
    assert max(abs(c) for f, c in contributions.items() if f not in chosen) <= min(sizes)
    for r in reasons:
        name = r["feature"]
        assert r["contribution"] == contributions[name]
        assert r["description"] == DESCRIPTIONS[name]
        assert r["value"] == pytest.approx(features[name], rel=1e-12, abs=1e-9)
        text = r["text"]
        assert text.startswith(f"{DESCRIPTIONS[name]}: ")
        assert ("raises" if r["contribution"] > 0 else "lowers") in text
        assert f"(x{math.exp(r['contribution']):.2f})" in text
        assert ("expected revenue" if model == "clv" else "odds of churning") in text


async def test_explanations_add_up_to_the_predictions(
    demo_client: httpx.AsyncClient, demo_settings: Settings, model_dir: Path
) -> None:
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    manifest = reference_predictions(model_dir, matrix.values[:1]).manifest
    scale = float(manifest.training["clv_scale"])
    calibration = manifest.churn_calibration
    seen_stages = set()
    for i in range(0, len(matrix), 29):
        customer = matrix.customer_ids[i]
        p = await single(demo_client, customer, AS_OF, explain="true")
        plain = await single(demo_client, customer, AS_OF)
        explanation = p.pop("explanation")
        assert without_scored_at(p) == without_scored_at(plain)
        assert set(explanation) == {"clv", "churn", "out_of_range"}
        row = matrix.row(customer)
        assert [f["feature"] for f in explanation["out_of_range"]] == [
            name
            for name, value in row.items()
            if name in manifest.feature_ranges
            and not manifest.feature_ranges[name][0] <= value <= manifest.feature_ranges[name][1]
        ]
        seen_stages.add(p["segment"]["lifecycle_stage"])
        for model in ("clv", "churn"):
            e = explanation[model]
            total = e["base_value"] + sum(e["contributions"].values())
            assert total == pytest.approx(e["raw_margin"], abs=1e-4), (customer, model)
            check_reasons(e, row, model)
        clv_margin = explanation["clv"]["raw_margin"]
        assert math.exp(clv_margin) * scale == pytest.approx(
            p["clv"]["value"], rel=2e-4, abs=0.006
        ), customer
        churn = sigmoid(explanation["churn"]["raw_margin"])
        if calibration.method == "platt":
            z = math.log(churn / (1 - churn))
            churn = sigmoid(calibration.a * z + calibration.b)
        assert churn == pytest.approx(p["churn"]["probability"], abs=2e-5), customer
    assert len(seen_stages) >= 2


# --- batch --------------------------------------------------------------------------------------


async def test_batch_over_the_limit_is_a_422_naming_customer_ids(
    demo_settings: Settings,
) -> None:
    limited = demo_settings.model_copy(update={"max_batch_predictions": 3})
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    ids = matrix.customer_ids[:4]
    async with app_client(limited) as client:
        over = await client.post("/v1/predictions/batch", json={"customer_ids": ids})
        at = await client.post("/v1/predictions/batch", json={"customer_ids": ids[:3]})
    body = assert_problem(over, 422, "validation")
    assert [e["field"] for e in body["errors"]] == ["customer_ids"]
    assert body["errors"][0]["pointer"] == "/customer_ids"
    assert at.status_code == 200
    assert at.json()["found"] == 3


async def test_batch_default_limit_is_1000(demo_client: httpx.AsyncClient) -> None:
    ids = [f"nobody-{i}" for i in range(1001)]
    over = await demo_client.post("/v1/predictions/batch", json={"customer_ids": ids})
    assert [e["field"] for e in assert_problem(over, 422)["errors"]] == ["customer_ids"]
    at = await demo_client.post("/v1/predictions/batch", json={"customer_ids": ids[:1000]})
    assert at.status_code == 200
    assert at.json()["not_found"] == 1000


async def test_batch_reports_unknown_and_repeated_ids_in_request_order(
    demo_client: httpx.AsyncClient, demo_settings: Settings
) -> None:
    known = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids
    a, b = known[3], known[40]
    ids = ["ghost-1", a, b, a, "ghost-2", "ghost-1", b]
    body = await batch(demo_client, ids, AS_OF)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(ids)))
    assert [r["customer_id"] for r in results] == ids
    assert [r["status"] for r in results] == [
        "not_found",
        "ok",
        "ok",
        "ok",
        "not_found",
        "not_found",
        "ok",
    ]
    assert (body["found"], body["not_found"]) == (4, 3)
    assert all("prediction" not in r for r in results if r["status"] == "not_found")
    assert without_scored_at(results[1]["prediction"]) == without_scored_at(
        results[3]["prediction"]
    )
    assert results[2]["prediction"]["customer_id"] == b
    assert body["model_version"] == results[1]["prediction"]["model_version"]
    assert parse_as_of(body["as_of"]) == parse_as_of(AS_OF)
    # Nothing known at all: every item not_found, still a 200.
    empty = await batch(demo_client, ["ghost-1", "ghost-2", "ghost-1"], AS_OF)
    assert [r["status"] for r in empty["results"]] == ["not_found"] * 3
    assert (empty["found"], empty["not_found"]) == (0, 3)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"customer_ids": ["ok-1", "bad id"]}, "customer_ids.1"),
        ({"customer_ids": ["x" * 129]}, "customer_ids.0"),
        ({"customer_ids": []}, "customer_ids"),
        ({"customer_ids": [42]}, "customer_ids.0"),
        ({"customer_ids": ["ok-1"], "as_of": "soon"}, "as_of"),
        ({"customer_ids": ["ok-1"], "extra": 1}, "extra"),
        ({}, "customer_ids"),
    ],
)
async def test_batch_validation_names_the_field(
    demo_client: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    response = await demo_client.post("/v1/predictions/batch", json=payload)
    body = assert_problem(response, 422, "validation")
    assert field in [e["field"] for e in body["errors"]], body


async def test_batch_results_equal_single_predictions(
    demo_client: httpx.AsyncClient, demo_settings: Settings
) -> None:
    known = offline_matrix(demo_settings, parse_as_of(EARLIER_AS_OF)).customer_ids
    ids = known[::23]
    body = await batch(demo_client, ids, EARLIER_AS_OF)
    for customer, result in zip(ids, body["results"], strict=True):
        one = await single(demo_client, customer, EARLIER_AS_OF)
        assert without_scored_at(result["prediction"]) == without_scored_at(one)


# --- as_of in the past --------------------------------------------------------------------------

HISTORY = [
    event("session", customer_id="pit", occurred_at="2026-01-01T09:00:00Z"),
    event("add_to_cart", customer_id="pit", occurred_at="2026-01-01T09:05:00Z"),
    event("order", customer_id="pit", occurred_at="2026-01-01T09:10:00Z", amount="100.00"),
    event("order", customer_id="pit", occurred_at="2026-01-11T12:00:00Z", amount="40.00"),
    event("refund", customer_id="pit", occurred_at="2026-01-12T12:00:00Z", amount="10.00"),
    event("order", customer_id="pit", occurred_at="2026-01-31T12:00:00Z", amount="60.00"),
    event("product_view", customer_id="pit", occurred_at="2026-02-05T08:00:00Z"),
]
T1 = "2026-02-10T18:00:00Z"


async def post_all(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 200
    assert response.json()["rejected"] == 0, response.text


async def test_a_past_as_of_reproduces_the_earlier_score(client: httpx.AsyncClient) -> None:
    await post_all(client, HISTORY)
    before = await single(client, "pit", T1, explain="true")
    later = [
        event("order", customer_id="pit", occurred_at="2026-02-10T18:00:01Z", amount="900.00"),
        event("session", customer_id="pit", occurred_at="2026-03-01T10:00:00Z"),
        event("order", customer_id="pit", occurred_at="2026-06-01T10:00:00Z", amount="15.00"),
    ]
    await post_all(client, later)
    again = await single(client, "pit", T1, explain="true")
    assert without_scored_at(again) == without_scored_at(before)
    # ... while "now" does see the later orders.
    now = await single(client, "pit", "2026-06-02")
    assert now["clv"]["value"] != before["clv"]["value"]

    # A late event stamped before T1 is part of the past: the score as of T1 changes.
    late = event("order", customer_id="pit", occurred_at="2026-02-09T10:00:00Z", amount="500.00")
    await post_all(client, [late])
    changed = await single(client, "pit", T1, explain="true")
    assert (
        changed["explanation"]["clv"]["contributions"]
        != before["explanation"]["clv"]["contributions"]
    )
    assert (changed["clv"]["value"], changed["churn"]["probability"]) != (
        before["clv"]["value"],
        before["churn"]["probability"],
    )
    features = await client.get("/v1/customers/pit/features", params={"as_of": T1})
    orders = {f["name"]: f["value"] for f in features.json()["features"]}["orders"]
    assert orders == 4  # three from the history plus the late one; none of the later ones


async def test_the_manifest_post_processing_is_applied(
    demo_settings: Settings, private_models: Path
) -> None:
    # The same trees under another manifest: a CLV scale and a Platt calibration.
    add_version(
        private_models,
        "platt-scaled",
        training={
            **read_manifest(private_models / str(current_version(private_models))).training,
            "clv_scale": 2.5,
        },
        churn_calibration=Calibration(method="platt", a=0.7, b=-0.4),
    )
    promote(private_models, "platt-scaled")
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    ref = reference_predictions(private_models, matrix.values)
    plain = reference_predictions(demo_settings.model_dir, matrix.values)
    assert ref.manifest.churn_calibration.method == "platt"
    np.testing.assert_allclose(
        ref.clv, plain.clv * 2.5 / float(plain.manifest.training["clv_scale"])
    )
    async with app_client(demo_settings.model_copy(update={"model_dir": private_models})) as client:
        body = await batch(client, matrix.customer_ids, AS_OF)
    for i, result in enumerate(body["results"]):
        p = result["prediction"]
        assert p["model_version"] == "platt-scaled"
        assert p["clv"]["value"] == round(float(ref.clv[i]), 2)
        assert p["churn"]["probability"] == round(float(ref.churn_probability[i]), 6)
    assert not np.allclose(ref.churn_probability, plain.churn_probability, atol=1e-3)


async def test_an_older_manifest_serves_without_intervals_orders_and_propensity(
    demo_settings: Settings, private_models: Path
) -> None:
    """A model from before issue 11 (no intervals, no orders/propensity files) still serves:
    the CLV and churn are the same, the new fields are left out, and `clv score` leaves them empty."""
    current = read_manifest(private_models / str(current_version(private_models)))
    files = {
        k: v
        for k, v in current.files.items()
        if not k.startswith(("orders", "propensity", "combined"))
    }
    old = add_version(
        private_models,
        "before-issue-11",
        files=files,
        clv_intervals={},
        propensity_days=None,
        eligibility={},
    )
    for name in (
        "orders.onnx",
        "propensity.onnx",
        "orders.xgb.json",
        "propensity.xgb.json",
        "all.onnx",
    ):
        (old / name).unlink()
    # The manifest as an older release wrote it: without the new keys at all.
    raw = json.loads((old / "manifest.json").read_text())
    for key in ("clv_intervals", "propensity_days", "eligibility"):
        raw.pop(key)
    raw["parity"].pop("extra")
    (old / "manifest.json").write_text(json.dumps(raw))
    promote(private_models, "before-issue-11")
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    plain = reference_predictions(demo_settings.model_dir, matrix.values)
    async with app_client(demo_settings.model_copy(update={"model_dir": private_models})) as client:
        body = await batch(client, matrix.customer_ids[:20], AS_OF)
    for i, result in enumerate(body["results"]):
        p = result["prediction"]
        assert p["model_version"] == "before-issue-11"
        assert p["clv"]["value"] == round(float(plain.clv[i]), 2)
        # The API omits null fields (as it does `notice` and `explanation`).
        assert set(p["clv"]) == {"value", "currency", "horizon_days"}, p
        assert "expected_orders" not in p, p
        assert "order_probability" not in p, p


def test_the_combined_graph_gives_the_four_files_numbers(
    demo_settings: Settings, model_dir: Path
) -> None:
    """Small requests run the combined graph (one onnxruntime call), large ones the four files
    side by side: the numbers are the same."""
    from app.scoring.predictor import PARALLEL_ROWS, Predictor

    directory = model_dir / str(current_version(model_dir))
    predictor = Predictor(directory)
    assert predictor.combined_session is not None
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    rows = np.resize(matrix.values, (PARALLEL_ROWS + 7, matrix.values.shape[1]))
    large = predictor.predict(rows)
    for i in range(0, len(rows), 37):
        small = predictor.predict(rows[i : i + 1])
        for name in ("clv", "churn_probability", "clv_p10", "clv_p90", "expected_orders"):
            assert getattr(small, name)[0] == pytest.approx(getattr(large, name)[i], abs=1e-9)
        assert small.order_probability is not None
        assert large.order_probability is not None
        assert small.order_probability[0] == pytest.approx(large.order_probability[i], abs=1e-9)
