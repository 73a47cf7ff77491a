"""Challengers: ONNX export with the XGBoost contract, the parity gate, out-of-time champions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from app.artifacts import CHURN_ONNX, CLV_ONNX, read_manifest, write_manifest
from app.features.definitions import FEATURE_NAMES
from app.features.repository import offline_matrix
from app.scoring.onnx import onnx_churn, onnx_clv, onnx_session
from app.scoring.predictor import Predictor
from app.scoring.registry import load_model
from app.training import challengers
from app.training import train as training
from app.training.options import TrainResult
from tests.training import test_train
from tests.training.test_train import END, options

pytestmark = pytest.mark.slow
demo_engine = test_train.demo_engine  # the same synthetic history, module-scoped here too


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heavy-tailed, partly negative features with NaN gaps; CLV and churn related to them."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(2.0, 1.5, (n, len(FEATURE_NAMES)))
    x[:, 1] -= 20.0
    x[rng.random(x.shape) < 0.05] = np.nan
    clv = np.maximum(np.nan_to_num(x[:, 0]) * rng.lognormal(0.0, 0.5, n) - 5.0, 0.0)
    churn = (rng.random(n) < 1 / (1 + np.nan_to_num(x[:, 2]) / 10)).astype(float)
    return x, clv, churn


@pytest.mark.parametrize("family", challengers.FAMILIES)
def test_export_keeps_the_xgboost_contract_and_passes_parity(family: str, tmp_path: Path) -> None:
    x, clv, churn = synthetic(3000, 1)
    regressor = challengers.fit_clv(family, x, clv, 0)
    classifier = challengers.fit_churn(family, x, churn, 0)
    challengers.clv_to_onnx(regressor, x.shape[1], tmp_path / "clv.onnx")
    challengers.churn_to_onnx(classifier, x.shape[1], tmp_path / "churn.onnx")
    # The serving helpers (input "input", out[0] values, out[1] probabilities) read them as is.
    values = onnx_clv(onnx_session(tmp_path / "clv.onnx"), x)
    probabilities = onnx_churn(onnx_session(tmp_path / "churn.onnx"), x)
    assert values.shape == (len(x),)
    assert probabilities.shape == (len(x),)
    # The target scale is inside the graph: values are in currency, like the labels.
    assert 0.2 < values.mean() / clv.mean() < 5.0
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    checked = challengers.parity(
        regressor, classifier, tmp_path / "clv.onnx", tmp_path / "churn.onnx", x
    )
    assert checked["passed"], checked


def test_parity_gate_catches_a_mismatch(tmp_path: Path) -> None:
    x, clv, churn = synthetic(2000, 2)
    exported = challengers.fit_clv("linear", x, clv, 0)
    classifier = challengers.fit_churn("linear", x, churn, 0)
    challengers.clv_to_onnx(exported, x.shape[1], tmp_path / "clv.onnx")
    challengers.churn_to_onnx(classifier, x.shape[1], tmp_path / "churn.onnx")
    other = challengers.fit_clv("linear", x[:1000], clv[:1000] * 1.5, 0)  # not what was exported
    checked = challengers.parity(
        other, classifier, tmp_path / "clv.onnx", tmp_path / "churn.onnx", x
    )
    assert not checked["passed"]
    assert checked["clv_max_abs_diff"] > checked["tolerance"]["clv_abs"]


def test_champion_is_the_best_out_of_time_per_target() -> None:
    out_of_time = {
        "xgboost": {"gini": 0.60, "auc": 0.80},
        "linear": {"gini": 0.55, "auc": 0.83},  # better churn out of time
        "mlp": {"gini": 0.62, "auc": 0.79},  # better CLV out of time
    }
    assert challengers.choose_champions(out_of_time) == {"clv": "mlp", "churn": "linear"}
    # Ties and missing or undefined metrics keep XGBoost.
    assert challengers.choose_champions(
        {"xgboost": {"gini": 0.6, "auc": 0.8}, "linear": {"gini": 0.6, "auc": float("nan")}}
    ) == {"clv": "xgboost", "churn": "xgboost"}


@pytest.fixture(scope="module")
def with_challengers(demo_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return training.train(demo_engine, options(tmp_path_factory.mktemp("models"), challengers=True))


def test_train_records_challengers_out_of_time(with_challengers: TrainResult) -> None:
    manifest = with_challengers.manifest
    block = manifest.training["challengers"]
    assert set(block) == set(challengers.FAMILIES)
    for family in challengers.FAMILIES:
        assert block[family]["parity"]["passed"]
        for name in block[family]["files"].values():
            assert (with_challengers.directory / name).is_file()
        assert manifest.metrics_out_of_time[family]["gini"] == pytest.approx(
            block[family]["metrics_out_of_time"]["gini"]
        )
    families = manifest.training["families"]
    assert set(families) == {"clv", "churn"}
    # The served model's out-of-time row is the champion's: never below XGBoost's on its metric.
    model, xgb = manifest.metrics_out_of_time["model"], manifest.metrics_out_of_time["xgboost"]
    assert model["gini"] >= xgb["gini"]
    assert model["auc"] >= xgb["auc"]


def test_a_winning_challenger_serves_through_the_same_contract(
    with_challengers: TrainResult, demo_engine: Engine, tmp_path: Path
) -> None:
    directory = tmp_path / with_challengers.directory.name
    shutil.copytree(with_challengers.directory, directory)
    manifest = read_manifest(directory)
    outcome = challengers.Outcome([], {"clv": "mlp", "churn": "linear"})
    outcome.challengers = [
        challengers.Challenger(f, challengers.file_names(f), {"passed": True}, {})
        for f in challengers.FAMILIES
    ]
    challengers.serve_champions(outcome, directory, manifest)
    write_manifest(directory, manifest)
    assert read_manifest(directory).training["families"] == {"clv": "mlp", "churn": "logistic"}
    features = offline_matrix(demo_engine, END).values
    served = load_model(directory).predictor.predict(features)  # what the API loads
    files = {f: challengers.file_names(f) for f in challengers.FAMILIES}
    expected_clv = np.maximum(onnx_clv(onnx_session(directory / files["mlp"]["clv"]), features), 0)
    expected_churn = onnx_churn(onnx_session(directory / files["linear"]["churn"]), features)
    np.testing.assert_allclose(served.clv, expected_clv, rtol=1e-6)
    np.testing.assert_allclose(served.churn_probability, expected_churn, rtol=1e-6)
    one = load_model(directory).predictor.predict(features[:1])  # the single-row path too
    np.testing.assert_allclose(one.clv, expected_clv[:1], rtol=1e-6)
    np.testing.assert_allclose(one.churn_probability, expected_churn[:1], rtol=1e-6)
    assert (directory / CLV_ONNX).read_bytes() == (directory / files["mlp"]["clv"]).read_bytes()
    assert (directory / CHURN_ONNX).read_bytes() == (
        directory / files["linear"]["churn"]
    ).read_bytes()
    assert Predictor(directory).manifest.churn_calibration.method == "none"
