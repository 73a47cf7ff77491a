"""Challengers: ONNX export with the XGBoost contract, the parity gate, out-of-time champions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from sqlalchemy import Engine

from app.artifacts import CHURN_ONNX, CLV_ONNX, promote, read_manifest, write_manifest
from app.config import Settings
from app.features.definitions import FEATURE_NAMES
from app.features.repository import offline_matrix
from app.scoring.explain import LinearExplainer
from app.scoring.onnx import onnx_churn, onnx_clv, onnx_session
from app.scoring.predictor import Predictor
from app.scoring.registry import load_model
from app.training import challengers
from app.training import train as training
from app.training.challenger_graph import signed_expm1
from app.training.options import TrainResult
from tests.conftest import app_client
from tests.factories import event
from tests.scoring.support import assert_problem
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
        challengers.Challenger(
            f,
            challengers.file_names(f),
            {"passed": True},
            {},
            clv_intervals={"nominal_level": 0.6, "family": f},
        )
        for f in challengers.FAMILIES
    ]
    shift = manifest.clv_intervals["non_buyers"]
    challengers.serve_champions(outcome, directory, manifest)
    write_manifest(directory, manifest)
    # The winner's own interval, with the label shift it was calibrated with recorded again.
    served_intervals = read_manifest(directory).clv_intervals
    assert served_intervals == {"nominal_level": 0.6, "family": "mlp", "non_buyers": shift}
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


def large_amounts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Amounts up to about a million and day counts in the hundreds, most labels zero: where a
    float32 Yeo-Johnson graph lost the low digits and failed parity (CDNOW, Online Retail)."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(4.0, 2.5, (n, len(FEATURE_NAMES)))
    x[:, 1] -= 200.0
    clv = np.maximum(x[:, 0] * rng.lognormal(0.0, 1.0, n) - 50.0, 0.0) * (rng.random(n) < 0.3)
    churn = (rng.random(n) < 1 / (1 + np.log1p(x[:, 2]) / 5)).astype(float)
    return x, clv, churn


@pytest.mark.parametrize("family", challengers.FAMILIES)
def test_float64_graph_passes_parity_on_large_amounts(family: str, tmp_path: Path) -> None:
    x, clv, churn = large_amounts(6000, 3)
    regressor = challengers.fit_clv(family, x, clv, 0)
    classifier = challengers.fit_churn(family, x, churn, 0)
    challengers.clv_to_onnx(regressor, x.shape[1], tmp_path / "clv.onnx")
    challengers.churn_to_onnx(classifier, x.shape[1], tmp_path / "churn.onnx")
    checked = challengers.parity(
        regressor, classifier, tmp_path / "clv.onnx", tmp_path / "churn.onnx", x
    )
    assert checked["passed"], checked
    # Not by a hair: float64 inside leaves only summation order (float32 missed by orders).
    assert checked["clv_max_rel_diff"] < 1e-9
    assert checked["churn_max_abs_diff"] < 1e-9
    # The served contract: float32 input, cast to float64 as the graph's first step.
    graph = onnx.load(str(tmp_path / "clv.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.node[0].op_type == "Cast"
    # The smearing factor puts the back-transformed fit's total on the labels' total.
    assert regressor.predict(x).sum() == pytest.approx(clv.sum(), rel=1e-9)


def test_linear_explanations_add_up_to_the_served_margin(tmp_path: Path) -> None:
    x, clv, churn = synthetic(3000, 4)
    x = np.nan_to_num(x, nan=0.0)
    x[:5, 3] = np.nan  # the graph's imputation, mirrored by the explainer
    regressor = challengers.fit_clv("linear", x, clv, 0)
    classifier = challengers.fit_churn("linear", x, churn, 0)
    challengers.clv_to_onnx(regressor, x.shape[1], tmp_path / "clv.onnx")
    challengers.churn_to_onnx(classifier, x.shape[1], tmp_path / "churn.onnx")
    for target, model in (("clv", regressor), ("churn", classifier)):
        block = challengers.linear_explainer(model, target)
        assert block is not None
        (tmp_path / f"{target}.json").write_text(json.dumps(block))
    rows = x[:200]
    clv_explained = LinearExplainer.load(tmp_path / "clv.json").explain(rows)
    churn_explained = LinearExplainer.load(tmp_path / "churn.json").explain(rows)
    clv_margin = np.array([e.raw_margin for e in clv_explained])
    churn_margin = np.array([e.raw_margin for e in churn_explained])
    for e in [*clv_explained, *churn_explained]:
        total = e.base_value + sum(c.contribution for c in e.contributions)
        assert total == pytest.approx(e.raw_margin, abs=1e-9)
        assert [c.feature for c in e.contributions] == list(FEATURE_NAMES)
    # The margins are the served graphs' own: sigmoid gives the churn probability, the
    # back-transform times the smearing factor gives the CLV.
    np.testing.assert_allclose(
        1 / (1 + np.exp(-churn_margin)),
        onnx_churn(onnx_session(tmp_path / "churn.onnx"), rows),
        rtol=0,
        atol=1e-9,
    )
    np.testing.assert_allclose(
        regressor.smear * signed_expm1(clv_margin),
        onnx_clv(onnx_session(tmp_path / "clv.onnx"), rows),
        rtol=1e-9,
        atol=1e-9,
    )
    np.testing.assert_allclose(clv_margin, regressor.margin(rows), rtol=0, atol=1e-9)
    # An MLP has no exact decomposition: no explainer.
    mlp = challengers.fit_churn("mlp", x[:500], churn[:500], 0)
    assert challengers.linear_explainer(mlp, "churn") is None


def serving(source: TrainResult, root: Path, champions: dict[str, str]) -> Path:
    """A model directory whose current version is `source` with `champions` serving."""
    directory = root / source.directory.name
    shutil.copytree(source.directory, directory)
    manifest = read_manifest(directory)
    outcome = challengers.Outcome(
        [
            challengers.Challenger(f, challengers.file_names(f), {"passed": True}, {})
            for f in challengers.FAMILIES
        ],
        champions,
    )
    challengers.serve_champions(outcome, directory, manifest)
    write_manifest(directory, manifest)
    promote(root, directory.name)
    return root


async def test_explanations_follow_the_served_family(
    with_challengers: TrainResult, settings: Settings, tmp_path: Path
) -> None:
    customer = "cust-explained"
    order = event(
        "order", customer_id=customer, amount="120.00", occurred_at="2026-05-01T10:00:00Z"
    )
    linear = serving(with_challengers, tmp_path / "linear", {"clv": "linear", "churn": "linear"})
    async with app_client(settings.model_copy(update={"model_dir": linear})) as client:
        assert (await client.post("/v1/events", json=order)).status_code == 201
        url = f"/v1/customers/{customer}/prediction"
        response = await client.get(url, params={"explain": "true", "as_of": "2026-06-30"})
        assert response.status_code == 200, response.text
        body = response.json()
        for target in ("clv", "churn"):
            e = body["explanation"][target]
            total = e["base_value"] + sum(e["contributions"].values())
            assert total == pytest.approx(e["raw_margin"], abs=1e-9)
        # The logistic margin is the served churn probability's log-odds (no Platt step).
        churn_margin = body["explanation"]["churn"]["raw_margin"]
        assert 1 / (1 + np.exp(-churn_margin)) == pytest.approx(
            body["churn"]["probability"], abs=1e-6
        )
        ridge = json.loads(
            (linear / with_challengers.directory.name / "clv_linear.explain.json").read_text()
        )
        assert body["explanation"]["clv"]["base_value"] == ridge["intercept"]
    mlp = serving(with_challengers, tmp_path / "mlp", {"clv": "mlp", "churn": "xgboost"})
    async with app_client(settings.model_copy(update={"model_dir": mlp})) as client:
        url = f"/v1/customers/{customer}/prediction"
        refused = await client.get(url, params={"explain": "true", "as_of": "2026-06-30"})
        problem = assert_problem(refused, 422, "explanation-unavailable")
        assert problem["errors"][0]["field"] == "explain"
        assert "clv by mlp" in problem["detail"]
        # Without explanations the MLP serves as usual.
        plain = await client.get(url, params={"as_of": "2026-06-30"})
        assert plain.status_code == 200, plain.text
        assert "explanation" not in plain.json()
