"""The models a model card shows, and their holdout metrics (scikit-learn / scipy; the Gini is
the normalised Gini of /work/shared/PROTOCOL.md, app.training.metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import brier_score_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from app.training import metrics

# Colour i belongs to models[i] in every chart and in the metrics table.
PALETTE = (
    "#2563eb",
    "#ea580c",
    "#16a34a",
    "#9333ea",
    "#dc2626",
    "#0891b2",
    "#ca8a04",
    "#db2777",
)


#: What `feature_importance` holds unless the caller says otherwise (app.training.fit.importance).
IMPORTANCE_TYPE = "share of XGBoost total gain (importance_type='total_gain'), largest first"


_CLV_KEYS = ("gini", "spearman", "bias", "rmse", "mae")
_CHURN_KEYS = ("auc", "brier")


@dataclass(frozen=True)
class EvaluatedModel:
    """One model or baseline evaluated on the holdout customers (arrays aligned with the actuals)."""

    name: str
    clv_predicted: np.ndarray
    churn_score: np.ndarray | None = None
    churn_probability: np.ndarray | None = None
    feature_importance: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True)
class Scored:
    """A model with its arrays validated against the actuals and its metrics (None = n/a)."""

    model: EvaluatedModel
    color: str
    clv: np.ndarray | None
    churn_score: np.ndarray | None
    churn_probability: np.ndarray | None
    values: dict[str, float | None]
    applicable: frozenset[str]  # metric keys the model is meant to have (None there = undefined)


def as_vector(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def _aligned(values: np.ndarray | None, actual: np.ndarray) -> np.ndarray | None:
    if values is None:
        return None
    vector = as_vector(values)
    # A misaligned array cannot be evaluated; showing n/a beats failing the whole training run.
    return vector if len(vector) == len(actual) and len(vector) > 0 else None


def finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def score_model(
    model: EvaluatedModel, color: str, clv_actual: np.ndarray, churn_actual: np.ndarray
) -> Scored:
    clv = _aligned(model.clv_predicted, clv_actual)
    probability = _aligned(model.churn_probability, churn_actual)
    churn_score = _aligned(model.churn_score, churn_actual)
    if churn_score is None:
        churn_score = probability
    values: dict[str, float | None] = dict.fromkeys(_CLV_KEYS + _CHURN_KEYS)
    if clv is not None:
        values.update(clv_values(clv_actual, clv))
    labels = churn_actual > 0.5
    both_classes = 0 < labels.sum() < len(labels)
    if churn_score is not None and both_classes:
        values["auc"] = finite(float(roc_auc_score(labels, churn_score)))
    if probability is not None:
        values["brier"] = finite(
            float(brier_score_loss(labels, np.clip(probability, 0.0, 1.0), pos_label=True))
        )
    applicable = set(_CLV_KEYS)
    if model.churn_score is not None or model.churn_probability is not None:
        applicable.add("auc")
    if model.churn_probability is not None:
        applicable.add("brier")
    return Scored(model, color, clv, churn_score, probability, values, frozenset(applicable))


def clv_values(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """Gini, Spearman, bias, RMSE, MAE; None where undefined (no spread, no revenue)."""
    spread = bool(np.ptp(actual) > 0)
    revenue = bool(actual.sum() > 0)
    varied = bool(np.ptp(predicted) > 0)  # a constant prediction ranks nobody
    out: dict[str, float | None] = {
        "gini": finite(metrics.normalized_gini(actual, predicted))
        if spread and revenue and varied
        else None,
        "spearman": finite(float(spearmanr(actual, predicted).statistic))
        if spread and varied
        else None,
        "bias": float(predicted.sum() / actual.sum()) if revenue else None,
        "rmse": float(math.sqrt(mean_squared_error(actual, predicted))),
        "mae": float(mean_absolute_error(actual, predicted)),
    }
    return out
