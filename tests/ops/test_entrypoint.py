"""docker/entrypoint.sh from the checkout, exactly as the image runs it: migrate, import, the
batch commands, and `serve` with two workers (shared metrics, JSON logs)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import create_database, drop_database
from tests.factories import event
from tests.ops.support import Server, entrypoint, poll, serving

pytestmark = pytest.mark.slow

SECRET_PROPERTY = "s3cret-property-value"
SECRET_QUERY = "s3cret-query-text"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database on the shared test server, migrated by `entrypoint.sh migrate`."""
    url = create_database("clv_ops")
    try:
        migrated = entrypoint("migrate", env={"CLV_DATABASE_URL": url})
        assert migrated.returncode == 0, migrated.stderr
        assert "is at head" in migrated.stdout
        yield url
    finally:
        drop_database(url)


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, parsed by prometheus_client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(
    parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when absent)."""
    return parsed.get((name, frozenset(labels.items())), 0.0)


def started_workers(server: Server) -> set[int]:
    """Pids of the workers that finished their startup (model loaded)."""
    return {
        record["pid"]
        for record in map(json.loads, server.log_lines())
        if record["message"] == "Application startup complete."
    }


def test_batch_commands_run_through_the_entrypoint(database: str, tmp_path: Path) -> None:
    env = {"CLV_DATABASE_URL": database, "CLV_AUTH_DISABLED": "true"}
    wide = {**env, "COLUMNS": "200"}  # rich would cut the option table at 80 columns
    with ThreadPoolExecutor(2) as pool:
        helps = dict(
            zip(
                ("score", "train", "serve"),
                pool.map(lambda c: entrypoint(c, "--help", env=wide), ("score", "train", "serve")),
                strict=True,
            )
        )
        unknown = pool.submit(entrypoint, "no-such-command", env=env).result()
    for command, shown in helps.items():
        assert shown.returncode == 0, shown.stderr
        assert f"Usage: clv {command}" in shown.stdout
    for option in (
        "--workers",
        "--keepalive-timeout",
        "--forwarded-allow-ips",
        "--graceful-shutdown",
    ):
        assert option in helps["serve"].stdout
    # Anything else goes to clv unchanged, and fails the way clv does.
    assert unknown.returncode == 2
    assert "No such command" in unknown.stderr

    log = tmp_path / "tx.csv"
    log.write_text(
        "customer_id,occurred_at,amount\n"
        "csv-1,2026-01-05,19.90\ncsv-1,2026-02-11,42.00\ncsv-2,2026-03-01T10:00:00Z,5.00\n"
    )
    imported = entrypoint("import-transactions", "--format", "csv", str(log), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 new events" in imported.stdout
    again = entrypoint("import-transactions", "--format", "csv", str(log), env=env)
    assert "imported 0 new events (3 already stored)" in again.stdout


def test_serve_through_the_entrypoint_with_two_workers(
    database: str, model_dir: Path, tmp_path: Path
) -> None:
    env = {"CLV_DATABASE_URL": database, "CLV_AUTH_DISABLED": "true"}
    readyz: Counter[int] = Counter()
    serve_env = {
        **env,
        "CLV_MODEL_DIR": str(model_dir),
        "CLV_WORKERS": "2",
        "CLV_MODEL_POLL_SECONDS": "0",
        "CLV_LOG_LEVEL": "info",
    }
    with serving(serve_env, tmp_path / "server.log") as server:
        # /healthz answers as soon as one worker is up; the test needs both.
        assert poll(lambda: len(started_workers(server)) == 2, 60), server.log.read_text()
        http = httpx.Client(base_url=server.base, timeout=30)

        def probe() -> int:
            # A new connection each time, so both workers get some.
            status = httpx.get(f"{server.base}/readyz", timeout=30).status_code
            readyz[status] += 1
            return status

        order = event("order", customer_id="serve-1", properties={"note": SECRET_PROPERTY})
        created = http.post("/v1/events", params={"score": "true"}, json=order)
        assert created.status_code == 201, created.text
        assert "prediction" in created.json()
        traced = http.get(
            "/v1/customers/serve-1/prediction", headers={"X-Request-ID": "trace-ops-1"}
        )
        assert traced.status_code == 200
        assert traced.headers["x-request-id"] == "trace-ops-1"
        assert http.get("/v1/customers/serve-1", params={"q": SECRET_QUERY}).status_code == 200
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: probe(), range(48)))
        assert set(statuses) == {200}
        version = http.get("/v1/model").json()["version"]

        # Whichever worker answers the scrape, the counts are the sum over both workers.
        for _ in range(4):
            parsed = samples(httpx.get(f"{server.base}/metrics").text)
            requests = "clv_http_requests_total"
            assert value(parsed, requests, method="GET", route="/readyz", status="200") == 48
            route = "/v1/customers/{customer_id}/prediction"
            assert value(parsed, requests, method="GET", route=route, status="200") == 1
            assert value(parsed, "clv_predictions_total", kind="single") == 1
            assert value(parsed, "clv_predictions_total", kind="ingest") == 1
            assert value(parsed, "clv_events_ingested_total", type="order", status="created") == 1
            assert value(parsed, "clv_feature_fetch_duration_seconds_count", kind="ingest") == 1
            assert value(parsed, "clv_model_inference_duration_seconds_count", kind="single") == 1
            assert value(parsed, "clv_predicted_churn_probability_count") == 2
            assert value(parsed, "clv_model_info", version=version) == 1
            assert value(parsed, "clv_model_loaded") == 1
            assert value(parsed, "clv_model_age_seconds") > 0
            assert ("clv_db_pool_connections_in_use", frozenset({("pool", "main")})) in parsed
        exposition = httpx.get(f"{server.base}/metrics").text
        assert "serve-1" not in exposition  # route templates, never raw paths

    records = [json.loads(line) for line in server.log_lines()]  # every line is JSON
    text = server.log.read_text()
    assert SECRET_PROPERTY not in text
    assert SECRET_QUERY not in text
    access = [r for r in records if r["logger"] == "clv.access"]
    assert len({r["pid"] for r in access}) == 2, "both workers served (so the sums above are real)"
    [traced_line] = [r for r in access if r.get("request_id") == "trace-ops-1"]
    assert traced_line["route"] == "/v1/customers/{customer_id}/prediction"
    assert traced_line["method"] == "GET"
    assert traced_line["status"] == 200
    assert traced_line["client_ip"] == "127.0.0.1"
    assert isinstance(traced_line["duration_ms"], float)
    assert not [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(r["logger"] == "uvicorn.error" for r in records)  # uvicorn's own lines, as JSON
