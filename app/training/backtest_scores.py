"""The metrics of one method at one backtest origin: ranking, calibration, bias, deciles
(issue 10) and the CLV interval, expected orders and order probability (issue 11).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import brier_score_loss, roc_auc_score

from app.features.definitions import FEATURE_INDEX
from app.training import metrics


@dataclass(frozen=True)
class MethodScores:
    """One method's scores for every customer at an origin, or why it has none."""

    clv: np.ndarray | None
    churn_score: np.ndarray | None
    churn_probability: np.ndarray | None = None
    error: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Issue 11: CLV interval, expected orders over the CLV horizon, P(order in propensity_days).
    clv_p10: np.ndarray | None = None
    clv_p90: np.ndarray | None = None
    orders: np.ndarray | None = None
    propensity: np.ndarray | None = None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def method_metrics(
    clv_actual: np.ndarray, churned: np.ndarray, scores: MethodScores
) -> dict[str, Any]:
    """Gini, Spearman, AUC, Brier, aggregate bias, top-10 % capture and deciles of one method."""
    if scores.clv is None or scores.churn_score is None:
        raise ValueError("no scores to evaluate")
    clv = scores.clv
    total = float(clv_actual.sum())
    both_classes = 0 < churned.sum() < len(churned)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: spearmanr warns and returns nan
        rho = float(spearmanr(clv_actual, clv).statistic) if len(clv) > 1 else math.nan
    top = max(1, math.ceil(len(clv) / 10))
    order = np.argsort(-clv, kind="stable")  # ties: external-id order (rows are sorted by id)
    ideal = np.sort(clv_actual)[::-1]
    return {
        "gini": _finite(metrics.normalized_gini(clv_actual, clv)) if total > 0 else None,
        "spearman": _finite(rho),
        "auc": float(roc_auc_score(churned, scores.churn_score)) if both_classes else None,
        "brier": (
            float(brier_score_loss(churned, np.clip(scores.churn_probability, 0.0, 1.0)))
            if scores.churn_probability is not None
            else None
        ),
        "bias": float(clv.sum() / total) if total > 0 else None,
        "top10_share": float(clv_actual[order[:top]].sum() / total) if total > 0 else None,
        "top10_share_ideal": float(ideal[:top].sum() / total) if total > 0 else None,
        "predicted_total": float(clv.sum()),
        "deciles": [asdict(d) for d in metrics.deciles(clv_actual, clv)],
    }


def column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FEATURE_INDEX[name]]


#: Issue 11's bar: the 80 % CLV interval covers 80 % ± 5 points of customers at every origin.
COVERAGE_TARGET, COVERAGE_TOLERANCE = 0.80, 0.05


def prediction_metrics(
    clv_actual: np.ndarray, orders_actual: np.ndarray, bought: np.ndarray, scores: MethodScores
) -> dict[str, Any]:
    """Issue 11: interval coverage (overall, by decile of predicted CLV), orders MAE and bias,
    propensity AUC and Brier; None for what a method does not predict."""
    out: dict[str, Any] = {
        "coverage_80": None,
        "below_p10": None,
        "above_p90": None,
        "coverage_by_decile": None,
        "orders_mae": None,
        "orders_bias": None,
        "propensity_auc": None,
        "propensity_brier": None,
    }
    if scores.clv_p10 is not None and scores.clv_p90 is not None and scores.clv is not None:
        # Rounded like the API (cents): an actual of 0 against a p10 of 1e-9 is covered.
        low, high = np.round(scores.clv_p10, 2), np.round(scores.clv_p90, 2)
        covered = (clv_actual >= low) & (clv_actual <= high)
        out["coverage_80"] = float(covered.mean())
        out["below_p10"] = float((clv_actual < low).mean())
        out["above_p90"] = float((clv_actual > high).mean())
        order = np.argsort(-scores.clv, kind="stable")
        out["coverage_by_decile"] = [
            {
                "decile": k + 1,
                "customers": len(part),
                "coverage": float(covered[part].mean()),
                "zero_actual_share": float((clv_actual[part] == 0).mean()),
            }
            for k, part in enumerate(np.array_split(order, 10))
            if len(part)
        ]
    if scores.orders is not None:
        total = float(orders_actual.sum())
        out["orders_mae"] = float(np.mean(np.abs(scores.orders - orders_actual)))
        out["orders_bias"] = float(scores.orders.sum() / total) if total > 0 else None
    if scores.propensity is not None:
        if 0 < bought.sum() < len(bought):
            out["propensity_auc"] = float(roc_auc_score(bought, scores.propensity))
        out["propensity_brier"] = float(
            brier_score_loss(bought, np.clip(scores.propensity, 0.0, 1.0))
        )
    return out
