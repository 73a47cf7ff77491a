"""Request ids, JSON logs, Prometheus metrics and readiness, in process."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from sqlalchemy import create_engine, text

from app.config import Settings
from app.db import sync_url
from app.main import create_app
from app.observability import metrics
from app.observability.logs import JsonFormatter
from tests.conftest import bearer, captured_logs
from tests.factories import event
from tests.server import ROOT

HEX_ID = re.compile(r"[0-9a-f]{32}")
SECRET = "s3cret-body-value"


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What the service logs during the test, at info level."""
    with captured_logs(logging.INFO) as stream:
        yield stream


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    """The JSON documents logged so far."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def _crash(request: Request) -> None:
    await request.body()
    raise RuntimeError("boom: the details stay in the log")


async def _disk_error() -> None:
    raise FileNotFoundError("/nowhere/model.onnx")


@pytest.fixture
async def crashing(sqlite_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app on SQLite with two routes that fail the way bugs do."""
    app: FastAPI = create_app(sqlite_settings)
    app.add_api_route("/crash", _crash, methods=["POST"])
    app.add_api_route("/disk", _disk_error)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://clv.test",
            headers=bearer(sqlite_settings.database_url),
        ) as client:
            yield client


async def test_request_ids_are_echoed_validated_or_generated(
    crashing: httpx.AsyncClient,
) -> None:
    echoed = await crashing.get("/healthz", headers={"X-Request-ID": "edge-7f3a:trace/1+x=y"})
    assert echoed.headers["x-request-id"] == "edge-7f3a:trace/1+x=y"
    for bad in ("a b", "x" * 129, "<script>", ""):
        replaced = await crashing.get("/healthz", headers={"X-Request-ID": bad})
        assert HEX_ID.fullmatch(replaced.headers["x-request-id"]), bad
    generated = [(await crashing.get("/healthz")).headers["x-request-id"] for _ in range(2)]
    assert all(HEX_ID.fullmatch(g) for g in generated)
    assert generated[0] != generated[1]
    # Every answer carries one, errors included.
    answers = {
        404: await crashing.get("/no/such/route"),
        422: await crashing.post("/v1/events", json={"type": "order"}),
        413: await crashing.post("/v1/events", content=b"x" * 2_000_000),
        500: await crashing.post("/crash", content=b"{}"),
    }
    for status, response in answers.items():
        assert response.status_code == status
        assert HEX_ID.fullmatch(response.headers["x-request-id"]), status


async def test_an_unhandled_error_is_a_500_problem_logged_once_with_its_stack(
    crashing: httpx.AsyncClient, logged: io.StringIO
) -> None:
    response = await crashing.post(
        "/crash?q=private", content=json.dumps({"note": SECRET}), headers={"X-Request-ID": "r-500"}
    )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/internal")
    assert "boom" not in response.text  # internals stay in the log
    assert response.headers["x-request-id"] == "r-500"
    lines = records(logged)
    [error] = [r for r in lines if r["level"] == "error"]
    assert error["request_id"] == "r-500"
    assert error["route"] == "/crash"
    assert error["error"]["type"] == "RuntimeError"
    assert "Traceback" in error["error"]["stack"]
    assert "boom: the details stay in the log" in error["error"]["stack"]
    [access] = [r for r in lines if r["logger"] == "clv.access"]
    assert access == {
        **access,
        "method": "POST",
        "route": "/crash",
        "status": 500,
        "request_id": "r-500",
    }
    assert SECRET not in logged.getvalue()
    assert "private" not in logged.getvalue()


async def test_an_os_error_that_is_not_the_database_stays_a_500(
    crashing: httpx.AsyncClient,
) -> None:
    response = await crashing.get("/disk")
    assert response.status_code == 500
    assert "retry-after" not in response.headers


def sample(name: str, **labels: str) -> float:
    """A sample of the process's default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


EVENTS = "clv_events_ingested_total"
#: (sample, labels) -> how much the requests in the test below must add.
EXPECTED_DELTAS: list[tuple[str, dict[str, str], float]] = [
    (EVENTS, {"type": "order", "status": "created"}, 2),
    (EVENTS, {"type": "order", "status": "duplicate"}, 1),
    (EVENTS, {"type": "order", "status": "rejected"}, 1),  # the 409
    (EVENTS, {"type": "invalid", "status": "rejected"}, 1),  # unknown types share one label
    (EVENTS, {"type": "page_view", "status": "created"}, 1),
    ("clv_predictions_total", {"kind": "single"}, 1),
    ("clv_predictions_total", {"kind": "batch"}, 1),  # found customers only
    ("clv_predictions_total", {"kind": "ingest"}, 1),
    ("clv_feature_fetch_duration_seconds_count", {"kind": "single"}, 1),
    ("clv_model_inference_duration_seconds_count", {"kind": "batch"}, 1),
    ("clv_predicted_churn_probability_count", {}, 3),
    ("clv_predicted_clv_count", {}, 3),
    (
        "clv_http_requests_total",
        {"method": "GET", "route": "/v1/customers/{customer_id}", "status": "404"},
        1,
    ),
]


async def test_metrics_count_requests_by_template_events_and_predictions(
    client: httpx.AsyncClient,
) -> None:
    before = [sample(name, **labels) for name, labels, _ in EXPECTED_DELTAS]
    order = event("order", customer_id="m-1")
    assert (await client.post("/v1/events", json=order)).status_code == 201
    assert (await client.post("/v1/events", json=order)).status_code == 200
    assert (await client.post("/v1/events", json={**order, "amount": "1.00"})).status_code == 409
    batch = {"events": [event("page_view", customer_id="m-1"), {**event("order"), "type": "x"}]}
    assert (await client.post("/v1/events/batch", json=batch)).status_code == 200
    assert (await client.get("/v1/customers/m-1/prediction")).status_code == 200
    ids = {"customer_ids": ["m-1", "nobody"]}
    assert (await client.post("/v1/predictions/batch", json=ids)).status_code == 200
    scored = event("order", customer_id="m-1")
    assert (await client.post("/v1/events?score=true", json=scored)).status_code == 201
    assert (await client.get("/v1/customers/nobody-42")).status_code == 404

    for (name, labels, expected), earlier in zip(EXPECTED_DELTAS, before, strict=True):
        assert sample(name, **labels) - earlier == expected, (name, labels)
    scrape = await client.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    assert "nobody-42" not in scrape.text  # templates, never raw paths
    version = (await client.get("/v1/model")).json()["version"]
    assert f'clv_model_info{{version="{version}"}} 1.0' in scrape.text
    assert 'clv_db_pool_connections_in_use{pool="main"}' in scrape.text
    assert "clv_model_age_seconds " in scrape.text


def test_observe_many_equals_observing_each_value() -> None:
    registry = CollectorRegistry()
    buckets = (0.1, 0.5, 1.0, 5.0)
    one_by_one = Histogram("one_by_one", "x", buckets=buckets, registry=registry)
    folded = Histogram("folded", "x", buckets=buckets, registry=registry)
    values = np.concatenate([np.random.default_rng(3).exponential(1.0, 500), [0.1, 0.5, 5.0, 9.0]])
    for v in values:
        one_by_one.observe(float(v))
    metrics.observe_many(folded, values)
    exposition = generate_latest(registry).decode()
    rows = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }
    compared = [key for key in rows if key.startswith("one_by_one")]
    assert len(compared) == len(buckets) + 3  # buckets, +Inf, _count, _sum
    for key in compared:
        assert rows[key.replace("one_by_one", "folded", 1)] == pytest.approx(rows[key]), key


async def test_readyz_says_so_when_the_schema_is_behind_head(sqlite_settings: Settings) -> None:
    app = create_app(sqlite_settings)
    engine = create_engine(sync_url(sqlite_settings.database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://clv.test",
            headers=bearer(sqlite_settings.database_url),
        ) as client:
            assert (await client.get("/readyz")).status_code == 200
            with engine.begin() as connection:
                head = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
                connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
            await asyncio.sleep(1.1)  # the database check is cached for a second
            behind = await client.get("/readyz")
            assert behind.status_code == 503
            assert "run `clv migrate`" in behind.json()["checks"]["database"]
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE alembic_version SET version_num = :head"), {"head": head}
                )
            await asyncio.sleep(1.1)
            assert (await client.get("/readyz")).status_code == 200
    engine.dispose()


def test_json_formatter_emits_extra_fields_and_the_stack() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = logging.getLogger("clv.test").makeRecord(
            "clv.test",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            sys.exc_info(),
            extra={"route": "/v1/x/{id}", "status": 500},
        )
    document = json.loads(JsonFormatter().format(record))
    assert document["message"] == "failed x"
    assert document["level"] == "error"
    assert document["route"] == "/v1/x/{id}"
    assert document["status"] == 500
    assert document["error"]["type"] == "ValueError"
    assert "raise ValueError" in document["error"]["stack"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["ts"])


def test_logging_config_sends_uvicorn_to_json_and_silences_sql() -> None:
    script = (
        "import logging, logging.config\n"
        "from app.observability.logs import logging_config\n"
        "logging.config.dictConfig(logging_config('debug'))\n"
        "logging.getLogger('uvicorn.error').info('started')\n"
        "logging.getLogger('uvicorn.access').info('GET /v1/x?q=secret')\n"
        "logging.getLogger('sqlalchemy.engine.Engine').info('INSERT ... secret')\n"
        "logging.getLogger('app.scoring').debug('debug line')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["logger"], r["message"]) for r in lines] == [
        ("uvicorn.error", "started"),
        ("app.scoring", "debug line"),
    ]
    assert result.stderr == ""
