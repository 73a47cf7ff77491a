"""The model shipped in models/: servable by this code, and every number it claims recomputed.

The default model is trained on the demo generator's shop (app/training/shipped.py). Here the
same data is generated again into a fresh Postgres database and the holdout figures are
computed from scratch with the shipped ONNX files, not read back from the manifest.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine

from app import schema
from app.artifacts import current_directory, read_manifest
from app.config import ROOT_DIR, Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader
from app.features.definitions import FEATURE_INDEX, FEATURE_NAMES
from app.features.repository import offline_matrix
from app.scoring.predictor import Predictor
from app.training import baselines, metrics, shipped
from app.training.dataset import holdout_mask
from app.training.repository import data_fingerprint, window_labels
from tests.conftest import create_database, drop_database

DIRECTORY = current_directory(ROOT_DIR / "models")


def test_shipped_model_matches_the_feature_code() -> None:
    assert DIRECTORY is not None, "models/current is missing: ship a model (make model-default)"
    manifest = read_manifest(DIRECTORY)
    # Raises ArtifactMismatch when the features changed since it was trained: `make model-default`.
    predictor = Predictor(DIRECTORY)
    assert manifest.parity.passed
    assert manifest.as_of == shipped.END
    assert manifest.clv_horizon_days == shipped.CLV_HORIZON_DAYS
    assert set(manifest.feature_ranges) == set(FEATURE_NAMES)
    out = predictor.predict(np.zeros((2, len(FEATURE_NAMES))))
    assert np.all(np.isfinite(out.clv))
    assert np.all((out.churn_probability >= 0) & (out.churn_probability <= 1))
    # Only one artifact ships.
    assert [p.name for p in (ROOT_DIR / "models").iterdir() if p.is_dir()] == [DIRECTORY.name]


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    url = create_database("clv_shipped")
    settings = Settings(database_url=url)
    schema.upgrade("head", settings)
    engine = create_sync_engine(settings)
    for _ in BulkLoader(engine, "USD").load_all(shipped.demo_chunks()):
        pass
    yield engine
    engine.dispose()
    drop_database(url)


@pytest.mark.slow
def test_shipped_numbers_are_recomputed(demo_engine: Engine) -> None:
    assert DIRECTORY is not None
    manifest = read_manifest(DIRECTORY)
    # The very data it was trained on (an order-independent hash of every event).
    assert data_fingerprint(demo_engine)["content_sha256"] == manifest.data["content_sha256"]
    predictor = Predictor(DIRECTORY)
    clv_cutoff, churn_cutoff = manifest.cutoffs["clv"][0], manifest.cutoffs["churn"][0]
    fraction = manifest.split["holdout_fraction"]

    clv_rows = offline_matrix(demo_engine, clv_cutoff)
    held = holdout_mask(clv_rows.customer_ids, fraction, "hash")
    features = clv_rows.values[held]
    net, _ = window_labels(
        demo_engine, clv_cutoff, manifest.clv_horizon_days, clv_rows.customer_ids
    )
    churn_rows = offline_matrix(demo_engine, churn_cutoff)
    churn_held = holdout_mask(churn_rows.customer_ids, fraction, "hash")
    _, orders = window_labels(
        demo_engine, churn_cutoff, manifest.churn_horizon_days, churn_rows.customer_ids
    )
    churned = (orders[churn_held] == 0).astype(float)

    model = {
        **metrics.clv_metrics(net[held], predictor.predict(features).clv),
        **metrics.churn_metrics(
            churned,
            p := predictor.predict(churn_rows.values[churn_held]).churn_probability,
            p,
        ),
    }
    for key, claimed in manifest.metrics["model"].items():
        assert model[key] == pytest.approx(claimed, rel=1e-3, abs=1e-4), key
    rate_clv, _ = baselines.spend_rate(features, manifest.clv_horizon_days)
    _, rate_churn = baselines.spend_rate(churn_rows.values[churn_held], manifest.clv_horizon_days)
    heuristic = {
        **metrics.clv_metrics(net[held], rate_clv),
        **metrics.churn_metrics(churned, rate_churn, None),
    }
    # The default model beats the heuristic and BG/NBD + Gamma-Gamma on ranking and churn.
    assert model["gini"] > heuristic["gini"]
    assert model["auc"] > heuristic["auc"]
    assert model["gini"] > manifest.metrics["bg_nbd_gamma_gamma"]["gini"]
    assert model["auc"] > manifest.metrics["bg_nbd_gamma_gamma"]["auc"]
    assert 0.8 < model["bias"] < 1.25


@pytest.mark.slow
def test_the_default_model_tells_the_demo_story(demo_engine: Engine) -> None:
    """Issue 10: refunds lower CLV; prospects get the churn they really have."""
    assert DIRECTORY is not None
    manifest = read_manifest(DIRECTORY)
    predictor = Predictor(DIRECTORY)
    now = offline_matrix(demo_engine, manifest.cutoffs["churn"][0])
    orders = now.values[:, FEATURE_INDEX["orders"]]
    buyers = now.values[orders > 0][:500]
    refunded = buyers.copy()
    gross = refunded[:, FEATURE_INDEX["gross_revenue"]]
    refunded[:, FEATURE_INDEX["refunded_revenue"]] += gross
    refunded[:, FEATURE_INDEX["net_revenue"]] -= gross
    refunded[:, FEATURE_INDEX["refunds"]] += refunded[:, FEATURE_INDEX["orders"]]
    refunded[:, FEATURE_INDEX["refund_rate"]] = np.where(
        gross > 0, refunded[:, FEATURE_INDEX["refunded_revenue"]] / np.maximum(gross, 1e-9), 0
    )
    before, after = predictor.predict(buyers).clv, predictor.predict(refunded).clv
    assert np.all(after <= before + 1e-9)
    assert after.sum() < before.sum()
    # Prospects (no order yet): predicted churn close to how many really place no order.
    prospects = orders == 0
    _, future = window_labels(demo_engine, now.as_of, manifest.churn_horizon_days, now.customer_ids)
    observed = float((future[prospects] == 0).mean())
    predicted = float(predictor.predict(now.values[prospects]).churn_probability.mean())
    assert abs(predicted - observed) < 0.05
