"""Every example in the OpenAPI document is valid for its schema and is what the API really says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from app.config import Settings
from app.errors import PROBLEM_BASE, PROBLEM_EXAMPLES, PROBLEM_JSON, AppError
from app.events.schemas import CREATED_EXAMPLE, DUPLICATE_EXAMPLE, ORDER_EXAMPLE
from app.main import create_app
from app.scoring.schemas import PREDICTION_EXAMPLE
from tests.conftest import app_client, bearer


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings()).openapi()
    return document


def documented_examples(spec: dict[str, Any]) -> Iterator[tuple[str, int, str, Any, Any]]:
    """(where, status, media type, schema, example) for every response example."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                for media, content in response.get("content", {}).items():
                    where = f"{method.upper()} {path} {code} {media}"
                    if "example" in content:
                        yield where, int(code), media, content["schema"], content["example"]
                    for name, example in content.get("examples", {}).items():
                        yield (
                            f"{where} {name}",
                            int(code),
                            media,
                            content["schema"],
                            example["value"],
                        )


def error_classes() -> dict[str, type[AppError]]:
    """Every AppError subclass by slug (app.main has imported every module that defines one)."""
    found: dict[str, type[AppError]] = {}
    stack: list[type[AppError]] = [AppError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.slug, cls)
        stack.extend(cls.__subclasses__())
    return found


def test_every_response_example_is_valid_and_has_its_status(spec: dict[str, Any]) -> None:
    classes = error_classes()
    seen = 0
    for where, code, media, schema, example in documented_examples(spec):
        validator = jsonschema_rs.validator_for({**schema, "components": spec["components"]})
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (where, errors)
        if media == PROBLEM_JSON:
            assert example["status"] == code, where
            if example["type"] == "about:blank":
                assert example["title"] == HTTPStatus(code).phrase, where
            else:
                cls = classes[example["type"].removeprefix(PROBLEM_BASE)]
                assert (cls.status, cls.title) == (code, example["title"]), where
            assert '"string"' not in json.dumps(example), where  # no placeholder values
        seen += 1
    assert seen >= 40


def test_every_schema_example_is_valid(spec: dict[str, Any]) -> None:
    for name, schema in spec["components"]["schemas"].items():
        validator = jsonschema_rs.validator_for(
            {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        )
        for example in schema.get("examples", []):
            errors = [e.message for e in validator.iter_errors(example)]
            assert not errors, (name, errors)


def test_the_success_examples_say_what_they_are(spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/v1/events"]["post"]["responses"]
    assert responses["201"]["description"] != "Successful Response"
    assert responses["201"]["content"]["application/json"]["example"]["status"] == "created"
    assert responses["200"]["content"]["application/json"]["example"]["status"] == "duplicate"
    ready = spec["paths"]["/readyz"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["example"]["ready"] is False
    assert ready["200"]["content"]["application/json"]["example"]["ready"] is True


def test_the_prediction_example_is_coherent() -> None:
    p = PREDICTION_EXAMPLE
    settings = Settings()
    assert p["expected_value_at_risk"] == round(p["clv"]["value"] * p["churn"]["probability"], 2)
    assert p["basis"] == "history"
    assert p["segment"]["lifecycle_stage"] == (
        "at_risk" if p["churn"]["probability"] > settings.at_risk_threshold else "active"
    )
    assert p["clv"]["currency"] == settings.currency


def shape(document: Any) -> Any:
    """The keys of a JSON document, recursively (values left out)."""
    if isinstance(document, dict):
        return {k: shape(v) for k, v in document.items()}
    if isinstance(document, list):
        return [shape(document[0])] if document else []
    return type(document).__name__ if isinstance(document, str | bool) else "number"


# --- against real calls --------------------------------------------------------------------------


def same_problem(response: httpx.Response, name: str, *, exact: bool = True) -> None:
    """The response is the documented example (detail and errors too when `exact`)."""
    example = PROBLEM_EXAMPLES[name]
    assert response.status_code == example["status"], response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    keys = ("type", "title", "status", "detail", "errors") if exact else ("type", "title", "status")
    assert {k: body.get(k) for k in keys} == {k: example.get(k) for k in keys}, name


async def test_the_documented_answers_are_the_real_ones(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await client.post("/v1/events", json=ORDER_EXAMPLE)
    assert created.status_code == 201, created.text
    without_clock = {**created.json()["event"], "received_at": None}
    assert without_clock == {**CREATED_EXAMPLE["event"], "received_at": None}
    assert created.json()["status"] == CREATED_EXAMPLE["status"]
    duplicate = await client.post("/v1/events", json=ORDER_EXAMPLE)
    assert duplicate.status_code == 200
    assert duplicate.json()["status"] == DUPLICATE_EXAMPLE["status"]
    assert {**duplicate.json()["event"], "received_at": None} == without_clock

    same_problem(
        await client.post("/v1/events", json={**ORDER_EXAMPLE, "amount": "1.00"}), "conflict"
    )
    same_problem(
        await client.post("/v1/events", json={**ORDER_EXAMPLE, "amount": "-1"}), "invalid-amount"
    )
    same_problem(
        await client.post("/v1/events", data={"event_id": "ord-1001"}), "unsupported-media-type"
    )
    same_problem(
        await client.post(
            "/v1/events", content=b'{"event_id": ', headers={"content-type": "application/json"}
        ),
        "malformed-json",
    )
    same_problem(
        await client.post(
            "/v1/events",
            content=b'{"event_id": "\xff"}',
            headers={"content-type": "application/json"},
        ),
        "bad-request",
    )
    same_problem(await client.post("/v1/events/batch", json=[ORDER_EXAMPLE]), "batch-not-an-object")
    same_problem(
        await client.post(
            "/v1/events",
            content=b"x" * 2_000_000,
            headers={"content-type": "application/json"},
        ),
        "payload-too-large",
    )
    same_problem(await client.get("/v1/customers/cust-404/prediction"), "not-found")
    same_problem(await client.get("/v1/customers/no%20spaces/prediction"), "invalid-customer-id")
    same_problem(
        await client.get("/v1/customers/cust-42/prediction?as_of=2026-11-01T00:00:00+01:00"),
        "invalid-as-of",
    )
    same_problem(
        await client.get("/v1/customers/cust-42/prediction", headers={"authorization": ""}),
        "unauthorized",
    )
    writer = bearer(settings.database_url, "events:write")
    same_problem(await client.get("/v1/customers/cust-42/prediction", headers=writer), "forbidden")

    # The prediction example has the shape of a real prediction.
    real = await client.get("/v1/customers/cust-42/prediction")
    assert real.status_code == 200, real.text
    assert shape(real.json()) == shape(PREDICTION_EXAMPLE)


async def test_the_documented_model_problems_are_the_real_ones(
    settings: Settings, tmp_path: Path
) -> None:
    async with app_client(settings.model_copy(update={"model_dir": tmp_path / "none"})) as client:
        same_problem(await client.get("/v1/model"), "model-unavailable", exact=False)
        same_problem(await client.post("/v1/admin/model/reload"), "model-refused", exact=False)
