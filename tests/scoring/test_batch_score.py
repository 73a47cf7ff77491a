"""`clv score` against the API: identical rows in CSV and Parquet, its stored run behind /v1/segments."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from app.artifacts import current_version
from app.config import Settings
from app.features.definitions import parse_as_of
from app.scoring.batch import COLUMNS
from app.scoring.lifecycle import STAGES, TIERS
from tests.scoring.support import AS_OF, EARLIER_AS_OF, offline_matrix, segment_pages
from tests.server import ROOT

pytestmark = pytest.mark.slow

Row = dict[str, Any]


def start_clv(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """Start the real `clv` command on these settings' database and model directory."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "CLV_DATABASE_URL": settings.database_url,
            "CLV_MODEL_DIR": str(settings.model_dir),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    """Wait for a `clv` process; its stdout, after asserting it succeeded."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stdout


def typed(row: Row) -> Row:
    """A score row with its numbers as floats (CSV gives text, Parquet floats)."""
    return {
        **row,
        "clv": float(row["clv"]),
        "churn_probability": float(row["churn_probability"]),
        "expected_value_at_risk": float(row["expected_value_at_risk"]),
        **{name: float(row[name]) for name in NEW_COLUMNS},
    }


#: Issue 11's columns: CLV interval, expected orders, order probability.
NEW_COLUMNS = ("clv_p10", "clv_p50", "clv_p90", "expected_orders", "order_probability")


@dataclass(frozen=True)
class CliRuns:
    """What the module's two `clv score` runs wrote."""

    csv_rows: list[Row]  # as of AS_OF, also stored (--store)
    parquet_rows: list[Row]  # as of EARLIER_AS_OF
    parquet_metadata: dict[bytes, bytes]
    stdout: str


@pytest.fixture(scope="module")
def cli_runs(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> CliRuns:
    out = tmp_path_factory.mktemp("scores")
    # Two independent runs, side by side (each spends seconds importing xgboost).
    first = start_clv(
        demo_settings, "score", "--as-of", AS_OF, "--out", str(out / "s.csv"), "--store"
    )
    second = start_clv(
        demo_settings, "score", "--as-of", EARLIER_AS_OF, "--out", str(out / "s.parquet")
    )
    stdout = finish(first)
    finish(second)
    with (out / "s.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        csv_rows = [typed(r) for r in reader]
    table = pq.read_table(out / "s.parquet")
    assert tuple(table.column_names) == COLUMNS
    # Nothing half-written is left next to the outputs.
    assert sorted(p.name for p in out.iterdir()) == ["s.csv", "s.parquet"]
    return CliRuns(
        csv_rows=csv_rows,
        parquet_rows=[typed(r) for r in table.to_pylist()],
        parquet_metadata=dict(table.schema.metadata or {}),
        stdout=stdout,
    )


async def api_predictions(client: httpx.AsyncClient, ids: list[str], as_of: str) -> dict[str, Row]:
    response = await client.post(
        "/v1/predictions/batch", json={"customer_ids": ids, "as_of": as_of}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all(r["status"] == "ok" for r in results)
    return {r["customer_id"]: r["prediction"] for r in results}


@pytest.mark.parametrize("output", ["csv", "parquet"])
async def test_cli_rows_equal_the_api_predictions(
    cli_runs: CliRuns,
    demo_client: httpx.AsyncClient,
    demo_settings: Settings,
    model_dir: Path,
    output: str,
) -> None:
    rows, as_of = (
        (cli_runs.csv_rows, AS_OF) if output == "csv" else (cli_runs.parquet_rows, EARLIER_AS_OF)
    )
    # Every customer with an event by as_of, once.
    expected_ids = offline_matrix(demo_settings, parse_as_of(as_of)).customer_ids
    assert [r["customer_id"] for r in rows] == expected_ids
    version = current_version(model_dir)
    api = await api_predictions(demo_client, expected_ids, as_of)
    for row in rows:
        p = api[row["customer_id"]]
        assert row["model_version"] == p["model_version"] == version
        assert parse_as_of(row["as_of"]) == parse_as_of(p["as_of"]) == parse_as_of(as_of)
        # The same text as the API (UTC spelled Z), not only the same instant.
        assert row["as_of"] == p["as_of"], row
        assert row["as_of"].endswith("Z")
        assert row["basis"] == p["basis"], row
        assert row["clv"] == p["clv"]["value"], row
        assert row["churn_probability"] == p["churn"]["probability"], row
        assert row["lifecycle_stage"] == p["segment"]["lifecycle_stage"], row
        assert row["value_tier"] == p["segment"]["value_tier"], row
        assert row["expected_value_at_risk"] == p["expected_value_at_risk"], row
        assert (row["clv_p10"], row["clv_p50"], row["clv_p90"]) == (
            p["clv"]["p10"],
            p["clv"]["p50"],
            p["clv"]["p90"],
        ), row
        assert row["clv_p10"] <= row["clv_p50"] <= row["clv_p90"], row
        assert row["expected_orders"] == p["expected_orders"]["value"], row
        assert row["order_probability"] == p["order_probability"]["probability"], row
    if output == "parquet":
        assert cli_runs.parquet_metadata[b"model_version"] == str(version).encode()
        assert parse_as_of(cli_runs.parquet_metadata[b"as_of"].decode()) == parse_as_of(as_of)
    else:
        assert f"scored {len(rows):,} customers with model {version}" in cli_runs.stdout
        assert "stored run" in cli_runs.stdout


def as_segment_member(row: Row) -> Row:
    return {
        k: row[k]
        for k in (
            "customer_id",
            "clv",
            "churn_probability",
            "lifecycle_stage",
            "value_tier",
            "expected_value_at_risk",
        )
    }


async def test_segments_serve_the_stored_run_by_value_at_risk(
    cli_runs: CliRuns, demo_client: httpx.AsyncClient, model_dir: Path
) -> None:
    by_stage: dict[str, list[Row]] = {s: [] for s in STAGES}
    for row in cli_runs.csv_rows:
        by_stage[row["lifecycle_stage"]].append(as_segment_member(row))
    assert sum(1 for rows in by_stage.values() if len(rows) > 7) >= 2  # real pagination
    for stage, expected in by_stage.items():
        items, runs = await segment_pages(demo_client, stage, limit=7)
        # The same customers with the same numbers, each exactly once ...
        assert sorted(items, key=lambda r: r["customer_id"]) == sorted(
            expected, key=lambda r: r["customer_id"]
        ), stage
        # ... highest expected value at risk first (ties are frequent among prospects).
        risks = [r["expected_value_at_risk"] for r in items]
        assert risks == sorted(risks, reverse=True), stage
        for run in runs:
            assert run["model_version"] == current_version(model_dir)
            assert parse_as_of(run["as_of"]) == parse_as_of(AS_OF)
            assert run["customers"] == len(cli_runs.csv_rows)
        assert len({run["id"] for run in runs}) == 1
        for tier in TIERS:
            filtered, _ = await segment_pages(demo_client, stage, limit=3, value_tier=tier)
            assert [r["customer_id"] for r in filtered] == [
                r["customer_id"] for r in items if r["value_tier"] == tier
            ], (stage, tier)
        # Large pages and small pages agree on the order.
        whole, _ = await segment_pages(demo_client, stage, limit=1000)
        assert whole == items
