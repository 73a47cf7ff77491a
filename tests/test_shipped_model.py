"""The model shipped in models/ must be servable by this code (else `make run` cannot score)."""

from __future__ import annotations

import numpy as np

from app.artifacts import current_directory, read_manifest
from app.config import ROOT_DIR
from app.features.definitions import FEATURE_NAMES
from app.scoring.predictor import Predictor


def test_shipped_model_matches_the_feature_code() -> None:
    directory = current_directory(ROOT_DIR / "models")
    assert directory is not None, (
        "models/current is missing: ship a model (python -m bench.cdnow_accuracy --keep-model models)"
    )
    manifest = read_manifest(directory)
    # Raises ArtifactMismatch when the features changed since it was trained: retrain and ship again.
    predictor = Predictor(directory)
    assert manifest.parity.passed
    assert manifest.split["method"] == "protocol-a"
    out = predictor.predict(np.zeros((2, len(FEATURE_NAMES))))
    assert np.all(np.isfinite(out.clv))
    assert np.all((out.churn_probability >= 0) & (out.churn_probability <= 1))
    beat = manifest.metrics["model"]
    base = manifest.metrics["bg_nbd_gamma_gamma"]
    assert beat["gini"] > base["gini"]
    assert beat["spearman"] > base["spearman"]
    assert beat["auc"] > base["auc"]
