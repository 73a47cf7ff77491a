"""Helpers for the scoring tests: demo data, in-process apps, reference predictions, artifacts."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.artifacts import (
    CHURN_ONNX,
    CLV_ONNX,
    Manifest,
    current_directory,
    read_manifest,
    write_manifest,
)
from app.config import Settings
from app.db import create_sync_engine
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader
from app.features.repository import FeatureMatrix, offline_features
from app.scoring.onnx import onnx_churn, onnx_clv, onnx_session
from app.scoring.predictor import calibrate

DEMO_END = dt.datetime(2026, 6, 30, tzinfo=dt.UTC)
#: The instant most tests score at: the end of the demo history's last day.
AS_OF = "2026-06-30"
AS_OF_INSTANT = dt.datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=dt.UTC)
#: An earlier instant, mid-history, with an explicit offset.
EARLIER_AS_OF = "2026-03-15T12:00:00+02:00"
PROBLEM_JSON = "application/problem+json"
#: Fields every prediction carries (explanation only with explain=true).
PREDICTION_FIELDS = {
    "customer_id",
    "as_of",
    "model_version",
    "clv",
    "churn",
    "segment",
    "expected_value_at_risk",
    "basis",
    "scored_at",
    "expected_orders",
    "order_probability",
}


def load_demo(settings: Settings, customers: int, seed: int) -> None:
    """Bulk-load synthetic histories ending at DEMO_END (two years)."""
    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, settings.currency)
    start = DEMO_END - dt.timedelta(days=730)
    for chunk in generate_demo(customers, seed, start=start, end=DEMO_END, chunk_customers=200):
        loader.load(chunk.events, chunk.customers)
    engine.dispose()


def offline_matrix(settings: Settings, as_of: dt.datetime, chunk: int = 101) -> FeatureMatrix:
    """Every customer's offline features as of `as_of`, in one matrix (built in small chunks,
    so that chunk boundaries are exercised)."""
    engine = create_sync_engine(settings)
    parts = list(offline_features(engine, as_of, chunk_customers=chunk))
    engine.dispose()
    return FeatureMatrix(
        as_of=as_of,
        customer_ids=[c for p in parts for c in p.customer_ids],
        values=np.vstack([p.values for p in parts]),
        n_events=np.concatenate([p.n_events for p in parts]),
        customer_pks=np.concatenate([p.customer_pks for p in parts]),
    )


@dataclass(frozen=True)
class Reference:
    """Unrounded predictions computed straight from an artifact's ONNX files and manifest."""

    manifest: Manifest
    clv: np.ndarray
    churn_probability: np.ndarray
    # Issue 11, computed here from the manifest and the ONNX files, not through Predictor.
    clv_p10: np.ndarray
    clv_p50: np.ndarray
    clv_p90: np.ndarray
    expected_orders: np.ndarray
    order_probability: np.ndarray


def reference_predictions(model_dir: Path, features: np.ndarray) -> Reference:
    """Run the current artifact's ONNX models directly and apply its manifest's post-processing."""
    directory = current_directory(model_dir)
    assert directory is not None
    return artifact_predictions(directory, features)


def artifact_predictions(directory: Path, features: np.ndarray) -> Reference:
    """Run one artifact directory's ONNX models directly and apply its manifest's post-processing."""
    manifest = read_manifest(directory)
    raw_clv = onnx_clv(onnx_session(directory / CLV_ONNX), features)
    clv = np.maximum(raw_clv * float(manifest.training["clv_scale"]), 0.0)
    churn = onnx_churn(onnx_session(directory / CHURN_ONNX), features)
    calibration = manifest.churn_calibration
    if calibration.method == "platt":
        churn = calibrate(churn, calibration.a, calibration.b)
    else:
        assert calibration.method == "none", calibration
    intervals = manifest.clv_intervals
    centers = np.asarray(intervals["centers"])
    p10, p50, p90 = (clv * np.interp(clv, centers, intervals[q]) for q in ("p10", "p50", "p90"))
    orders = np.maximum(
        onnx_clv(onnx_session(directory / manifest.files["orders_onnx"]), features), 0.0
    )
    propensity = onnx_churn(onnx_session(directory / manifest.files["propensity_onnx"]), features)
    return Reference(manifest, clv, churn, p10, p50, p90, orders, propensity)


def without_scored_at(prediction: dict[str, Any]) -> dict[str, Any]:
    """A prediction document minus the one field that is the wall clock."""
    return {k: v for k, v in prediction.items() if k != "scored_at"}


def copy_models(source: Path, target: Path) -> Path:
    """A private copy of a model directory (its `current` included) that tests may change."""
    shutil.copytree(source, target)
    return target


def add_version(model_dir: Path, version: str, **manifest_changes: Any) -> Path:
    """Copy the current artifact to a new version directory with its manifest's version set."""
    source = current_directory(model_dir)
    assert source is not None
    target = model_dir / version
    shutil.copytree(source, target)
    manifest = read_manifest(target)
    write_manifest(target, manifest.model_copy(update={"version": version, **manifest_changes}))
    return target


def assert_problem(
    response: httpx.Response, status: int, slug: str | None = None
) -> dict[str, Any]:
    """Assert an RFC 9457 problem document with this status (and type slug); return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if slug is not None:
        assert body["type"] == f"https://clv-service.dev/problems/{slug}"
    return body


async def segment_pages(
    client: httpx.AsyncClient, stage: str, limit: int, **params: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of a segment, following next_cursor; (items, run of each page)."""
    items: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query = {"limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/v1/segments/{stage}", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        runs.append(page["run"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, runs
        assert len(page["items"]) == limit
    raise AssertionError("pagination does not end")
