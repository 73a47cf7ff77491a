"""Issue 10 on real logs: a failing baseline never takes training down, failures leave nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from app import schema
from app.artifacts import current_version, read_manifest
from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader
from app.events.transactions import read_csv
from app.features.definitions import FEATURE_NAMES, parse_as_of
from app.training import export
from app.training.options import TrainingFailed, TrainOptions
from app.training.train import train
from tests.conftest import CDNOW, create_database, drop_database

pytestmark = pytest.mark.slow
ONLINE_RETAIL = CDNOW.parents[1] / "online-retail" / "transactions.csv"


@pytest.fixture(scope="module")
def retail_engine() -> Iterator[Engine]:
    """UCI Online Retail (GBP, cancellations as refunds) in a database of its own."""
    assert ONLINE_RETAIL.exists(), f"{ONLINE_RETAIL} is missing (../shared/data)"
    url = create_database("clv_retail")
    settings = Settings(database_url=url, currency="GBP")
    schema.upgrade("head", settings)
    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, "GBP")
    for stats in loader.load_all((columns, None) for columns in read_csv(ONLINE_RETAIL, "GBP")):
        assert stats.events_created == stats.events_seen
    yield engine
    engine.dispose()
    drop_database(url)


def retail_options(model_dir: Path, **overrides: object) -> TrainOptions:
    base: dict[str, object] = {
        "as_of": parse_as_of("2011-06-09"),
        "model_dir": model_dir,
        "clv_horizon_days": 91,
        "churn_horizon_days": 91,
        "currency": "GBP",
        "progress": False,
        "threads": 1,
    }
    return TrainOptions(**{**base, **overrides})  # type: ignore[arg-type]


def test_a_failing_baseline_is_reported_not_fatal(
    retail_engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A BG/NBD fit that does not converge (ConvergenceError): the model still ships, and says why.

    The failure is forced with a NaN penalizer (lifetimes' objective is then NaN, so scipy stops
    at once): whether the unpenalized fit converges on Online Retail differs between CPUs.
    """
    result = train(retail_engine, retail_options(tmp_path, baseline_penalizer=float("nan")))
    manifest = result.manifest
    assert "ConvergenceError" in manifest.baseline_failures["bg_nbd_gamma_gamma"]
    assert "bg_nbd_gamma_gamma" not in manifest.metrics
    assert "ConvergenceError" in (result.directory / "report.html").read_text()
    assert result.promoted
    assert current_version(tmp_path) == manifest.version
    out = capsys.readouterr().out
    assert "hess_inv" not in out
    assert "message:" not in out
    # In-time and out-of-time metrics side by side; refunds exist here, so features move.
    assert {"model", "spend_rate"} <= set(manifest.metrics_out_of_time)
    assert manifest.metrics["model"]["gini"] > manifest.metrics["spend_rate"]["gini"]
    assert manifest.feature_ranges["refunds"][1] > 0
    assert manifest.data["events_by_type"]["refund"] == 3654
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([manifest.version, "current"])


def test_a_failed_run_leaves_nothing_behind(
    retail_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX parity failing (a tolerance nothing can meet) aborts with no version directory."""
    monkeypatch.setattr(export, "TOLERANCE", {"clv_rel": -1.0, "clv_abs": -1.0, "churn_abs": -1.0})
    with pytest.raises(TrainingFailed, match="disagree"):
        train(retail_engine, retail_options(tmp_path, baselines=False))
    assert list(tmp_path.iterdir()) == []


def test_one_and_two_threads_predict_the_same(retail_engine: Engine, tmp_path: Path) -> None:
    """Boosting on 1 or 2 threads gives the same trees (predictions equal to 1e-9)."""
    from app.features.repository import offline_matrix
    from app.scoring.predictor import Predictor

    one = train(retail_engine, retail_options(tmp_path / "one", baselines=False))
    two = train(retail_engine, retail_options(tmp_path / "two", baselines=False, threads=2))
    features = offline_matrix(retail_engine, parse_as_of("2011-06-09")).values
    assert features.shape[1] == len(FEATURE_NAMES)
    a, b = Predictor(one.directory).predict(features), Predictor(two.directory).predict(features)
    np.testing.assert_allclose(a.clv, b.clv, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.churn_probability, b.churn_probability, rtol=0, atol=1e-9)
    assert (one.directory / "clv.onnx").read_bytes() == (two.directory / "clv.onnx").read_bytes()
    assert read_manifest(two.directory).training["nthread"] == 2
