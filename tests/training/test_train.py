"""`clv train` on a small synthetic history: artifacts, parity, labels, promotion."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from app import schema
from app.artifacts import (
    CLV_ONNX,
    Manifest,
    current_version,
    promote,
    read_manifest,
    write_manifest,
)
from app.config import Settings
from app.db import create_sync_engine
from app.features.definitions import FEATURE_NAMES
from app.features.repository import fingerprint, offline_features
from app.scoring.predictor import ArtifactMismatch, Predictor
from app.training import train as training
from app.training.export import native_predict, onnx_clv, onnx_session
from app.training.options import TrainingFailed, TrainOptions, TrainResult
from tests.conftest import create_database, demo_database, drop_database

pytestmark = pytest.mark.slow
END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    """A database of its own with 2,500 synthetic customers over three years."""
    with demo_database("clv_train", 2_500, 11, end=END) as (_, engine):
        yield engine


def options(model_dir: Path, **overrides: object) -> TrainOptions:
    base: dict[str, object] = {
        "as_of": END,
        "model_dir": model_dir,
        "clv_horizon_days": 180,
        "churn_horizon_days": 90,
        "stack": 2,
        "stack_step_days": 60,
        "progress": False,
        "threads": 2,
    }
    return TrainOptions(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def first_model(demo_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return training.train(demo_engine, options(tmp_path_factory.mktemp("models")))


def test_artifact_directory_is_complete(first_model: TrainResult) -> None:
    directory = first_model.directory
    for name in (
        "clv.onnx",
        "churn.onnx",
        "clv.xgb.json",
        "churn.xgb.json",
        "manifest.json",
        "report.html",
    ):
        assert (directory / name).stat().st_size > 0, name
    manifest = read_manifest(directory)
    assert manifest.feature_names == list(FEATURE_NAMES)
    assert manifest.feature_fingerprint == fingerprint()
    assert manifest.clv_horizon_days == 180
    assert manifest.churn_horizon_days == 90
    assert manifest.parity.passed
    assert manifest.rows["clv_train"] > manifest.rows["clv_holdout"] > 0
    assert {"model", "spend_rate", "bg_nbd_gamma_gamma"} <= set(manifest.metrics)
    assert (
        manifest.clv_quantiles["p10"]
        <= manifest.clv_quantiles["p50"]
        <= manifest.clv_quantiles["p99"]
    )
    assert 0 <= manifest.churn_quantiles["p10"] <= manifest.churn_quantiles["p99"] <= 1
    # The latest cutoff is as_of - horizon; the other one reaches back to the start of history.
    cutoffs = [c.date() for c in manifest.cutoffs["clv"]]
    assert cutoffs[0] == dt.date(2026, 1, 1)
    assert len(cutoffs) == 2
    assert cutoffs[1] < dt.date(2024, 1, 1)
    assert manifest.data["events"] > 0
    assert manifest.data["content_sha256"]
    assert set(manifest.feature_ranges) == set(FEATURE_NAMES)
    assert manifest.training["clv_params"]["monotone_constraints"].count("-1") == 3
    assert "<svg" in (directory / "report.html").read_text()


def test_the_model_learns_something(first_model: TrainResult) -> None:
    model = first_model.manifest.metrics["model"]
    assert model["gini"] > 0.3
    assert model["auc"] > 0.65
    assert 0.5 < model["bias"] < 1.5


def test_first_model_is_promoted(first_model: TrainResult) -> None:
    assert first_model.promoted
    assert current_version(first_model.directory.parent) == first_model.manifest.version


def test_onnx_matches_native_xgboost(first_model: TrainResult, demo_engine: Engine) -> None:
    import xgboost as xgb

    matrix = next(offline_features(demo_engine, END))
    booster = xgb.Booster()
    booster.load_model(first_model.directory / "clv.xgb.json")
    native = native_predict(booster, matrix.values)
    onnx = onnx_clv(onnx_session(first_model.directory / CLV_ONNX), matrix.values)
    np.testing.assert_allclose(onnx, native, rtol=1e-4, atol=1e-3)


def test_predictor_applies_the_manifest(first_model: TrainResult, demo_engine: Engine) -> None:
    matrix = next(offline_features(demo_engine, END))
    predictor = Predictor(first_model.directory)
    raw = onnx_clv(predictor.clv_session, matrix.values)
    out = predictor.predict(matrix.values)
    np.testing.assert_allclose(out.clv, np.maximum(raw * predictor.clv_scale, 0))
    assert ((out.churn_probability >= 0) & (out.churn_probability <= 1)).all()


def test_a_mismatched_manifest_is_refused(first_model: TrainResult, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(first_model.directory, copy)
    manifest = read_manifest(copy)
    write_manifest(copy, manifest.model_copy(update={"feature_fingerprint": "0" * 16}))
    with pytest.raises(ArtifactMismatch, match="retrain"):
        Predictor(copy)
    reordered = manifest.model_copy(
        update={"feature_names": list(reversed(manifest.feature_names))}
    )
    write_manifest(copy, reordered)
    with pytest.raises(ArtifactMismatch, match="order"):
        Predictor(copy)


def test_promotion_refuses_a_worse_model(
    first_model: TrainResult, demo_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deliberately crippled booster: one stump, tiny learning rate.
    from app.training import fit

    monkeypatch.setattr(fit, "TREE_PARAMS", {**fit.TREE_PARAMS, "max_depth": 1, "eta": 0.0001})
    monkeypatch.setattr(fit, "MAX_ROUNDS", 2)
    monkeypatch.setattr(fit, "MIN_ROUNDS", 1)
    monkeypatch.setattr(fit, "EARLY_STOPPING_ROUNDS", 1)
    model_dir = first_model.directory.parent
    worse = training.train(demo_engine, options(model_dir, baselines=False))
    assert not worse.promoted
    assert "NOT promoted" in worse.reason
    assert current_version(model_dir) == first_model.manifest.version
    forced = training.train(demo_engine, options(model_dir, baselines=False, force=True))
    assert forced.promoted
    assert current_version(model_dir) == forced.manifest.version
    # Restore the good model as current for the other tests in this module.
    promote(model_dir, first_model.manifest.version)


def test_manifest_is_plain_json(first_model: TrainResult) -> None:
    raw = json.loads((first_model.directory / "manifest.json").read_text())
    Manifest.model_validate(raw)
    assert raw["feature_names"] == list(FEATURE_NAMES)


def test_training_without_data_fails_clearly(tmp_path: Path) -> None:
    url = create_database("clv_empty")
    try:
        settings = Settings(database_url=url)
        schema.upgrade("head", settings)
        engine = create_sync_engine(settings)
        with pytest.raises(TrainingFailed, match="no customers"):
            training.train(engine, options(tmp_path))
        engine.dispose()
    finally:
        drop_database(url)
