"""XGBoost -> ONNX export edge cases the parity gate found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xgboost as xgb

from app.features.definitions import FEATURE_NAMES
from app.training.export import native_predict, onnx_churn, onnx_session, to_onnx
from app.training.fit import params


def test_a_classifier_that_learnt_only_its_intercept_exports_with_the_same_probabilities(
    tmp_path: Path,
) -> None:
    # Labels whose mean is the intercept and splits nobody may make: every tree is one leaf of
    # value 0, the case in which onnxmltools used base_score as a margin (sigmoid(0.1) = 0.525).
    # The propensity model's own parameters (as `clv train` fits it on a tiny shop).
    rng = np.random.default_rng(3)
    features = rng.normal(size=(200, len(FEATURE_NAMES))).astype(np.float32)
    labels = np.zeros(200)
    labels[:20] = 1.0
    booster = xgb.train(
        {**params("propensity", seed=0, threads=1), "min_child_weight": 1e6},
        xgb.DMatrix(features, label=labels),
        num_boost_round=5,
    )
    native = native_predict(booster, features)
    assert np.allclose(native, 0.1, atol=1e-6)  # the intercept, nothing learnt beyond it
    path = tmp_path / "propensity.onnx"
    to_onnx(booster, features.shape[1], path)
    exported = onnx_churn(onnx_session(path), features)
    assert np.abs(exported - native).max() <= 1e-6


def test_an_ordinary_classifier_keeps_its_exported_intercept(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(400, 3)).astype(np.float32)
    labels = (features[:, 0] + rng.normal(scale=0.5, size=400) > 0.8).astype(float)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "seed": 0, "nthread": 1},
        xgb.DMatrix(features, label=labels),
        num_boost_round=10,
    )
    path = tmp_path / "churn.onnx"
    to_onnx(booster, features.shape[1], path)
    exported = onnx_churn(onnx_session(path), features)
    assert np.abs(exported - native_predict(booster, features)).max() <= 1e-5
