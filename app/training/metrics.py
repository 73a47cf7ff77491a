"""Accuracy metrics for CLV and churn (definitions of ../shared/PROTOCOL.md), plain numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean rank."""
    return np.asarray(rankdata(values), dtype=np.float64)


def _gini_raw(actual: np.ndarray, predicted: np.ndarray) -> float:
    # Tied predictions carry no ranking information: average the best and the worst order
    # within ties instead of letting the input row order decide.
    n = len(actual)
    values = []
    for tie_break in (actual, -actual):
        order = np.lexsort((tie_break, -predicted))
        cumulative = np.cumsum(actual[order]) / actual.sum()
        values.append(cumulative.mean() - (n + 1) / (2 * n))
    return float(np.mean(values))


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of predictions over actual spend, normalised by the Gini of a perfect ranking."""
    return _gini_raw(actual, predicted) / _gini_raw(actual, actual)


def spearman(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Spearman rank correlation (ties averaged)."""
    a, p = _ranks(actual), _ranks(predicted)
    a -= a.mean()
    p -= p.mean()
    return float((a * p).sum() / np.sqrt((a * a).sum() * (p * p).sum()))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); positive class = 1."""
    ranks = _ranks(scores)
    positives = labels.astype(bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(
    labels: np.ndarray, scores: np.ndarray, points: int = 101
) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) at `points` score thresholds."""
    thresholds = np.quantile(scores, np.linspace(1, 0, points))
    positives = labels.astype(bool)
    n_pos, n_neg = max(positives.sum(), 1), max((~positives).sum(), 1)
    curve = [(0.0, 0.0)]
    for threshold in thresholds:
        flagged = scores >= threshold
        curve.append(
            (
                float((flagged & ~positives).sum() / n_neg),
                float((flagged & positives).sum() / n_pos),
            )
        )
    curve.append((1.0, 1.0))
    return curve


def lorenz_curve(
    actual: np.ndarray, predicted: np.ndarray, points: int = 101
) -> list[tuple[float, float]]:
    """Cumulative share of actual spend captured by the top x share of customers by prediction."""
    order = np.argsort(-predicted, kind="stable")
    cumulative = np.concatenate(([0.0], np.cumsum(actual[order]) / max(actual.sum(), 1e-12)))
    xs = np.linspace(0, 1, points)
    idx = np.round(xs * len(actual)).astype(int)
    return [(float(x), float(cumulative[i])) for x, i in zip(xs, idx, strict=True)]


@dataclass(frozen=True)
class Decile:
    """Customers ranked by prediction, 1 = highest predictions."""

    decile: int
    customers: int
    mean_predicted: float
    mean_actual: float
    share_of_actual: float


def deciles(actual: np.ndarray, predicted: np.ndarray) -> list[Decile]:
    """Mean predicted vs mean actual by decile of prediction."""
    n = len(predicted)
    order = np.argsort(-predicted, kind="stable")
    bucket = np.empty(n, dtype=int)
    bucket[order] = np.arange(n) * 10 // n
    total = max(actual.sum(), 1e-12)
    out = []
    for d in range(10):
        mask = bucket == d
        out.append(
            Decile(
                decile=d + 1,
                customers=int(mask.sum()),
                mean_predicted=float(predicted[mask].mean()) if mask.any() else 0.0,
                mean_actual=float(actual[mask].mean()) if mask.any() else 0.0,
                share_of_actual=float(actual[mask].sum() / total),
            )
        )
    return out


@dataclass(frozen=True)
class ReliabilityBin:
    """Predicted churn probability vs observed churn rate in one probability bin."""

    low: float
    high: float
    customers: int
    mean_predicted: float
    observed: float


def reliability(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
) -> list[ReliabilityBin]:
    """Reliability (calibration) curve in equal-width probability bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probabilities, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                ReliabilityBin(
                    low=float(edges[b]),
                    high=float(edges[b + 1]),
                    customers=int(mask.sum()),
                    mean_predicted=float(probabilities[mask].mean()),
                    observed=float(labels[mask].mean()),
                )
            )
    return out


def clv_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Gini, Spearman, aggregate bias, RMSE, MAE of a CLV prediction."""
    return {
        "gini": normalized_gini(actual, predicted),
        "spearman": spearman(actual, predicted),
        "bias": float(predicted.sum() / max(actual.sum(), 1e-12)),
        "rmse": float(np.sqrt(np.mean((predicted - actual) ** 2))),
        "mae": float(np.mean(np.abs(predicted - actual))),
    }


def churn_metrics(
    labels: np.ndarray, scores: np.ndarray, probabilities: np.ndarray | None
) -> dict[str, float]:
    """ROC AUC of a churn score, and the Brier score when it is a probability."""
    out = {"auc": roc_auc(labels, scores)}
    if probabilities is not None:
        out["brier"] = float(np.mean((probabilities - labels) ** 2))
    return out
