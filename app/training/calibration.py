"""Post-hoc calibration, fitted on out-of-time predictions: the CLV scale and churn Platt scaling.

Both are fitted on the validation customers at the latest cutoff, scored by the out-of-time fold
model (trained only on older cutoffs). The final model meets serving time with the same gap, so
the correction learnt there (e.g. a cohort spending less as it ages) is the one to apply.
"""

from __future__ import annotations

import numpy as np

from app.artifacts import Calibration
from app.scoring.predictor import calibrate
from app.training.dataset import hash_share
from app.training.intervals import fit_intervals

__all__ = ["choose_calibration", "clv_scale", "fit_intervals"]

#: A scale outside this range means the fold is too small or broken: keep it, but bounded.
SCALE_BOUNDS = (0.25, 4.0)


def clv_scale(predicted: np.ndarray, actual: np.ndarray) -> float:
    """The factor that makes total predicted CLV match the total actual (1.0 without signal)."""
    if predicted.sum() <= 0 or actual.sum() <= 0:
        return 1.0
    return float(np.clip(actual.sum() / predicted.sum(), *SCALE_BOUNDS))


def _platt(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Logistic regression of the label on logit(p) (Newton's method)."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    z = np.log(p / (1 - p))
    a, b = 1.0, 0.0
    for _ in range(50):
        q = 1 / (1 + np.exp(-(a * z + b)))
        gradient = np.array([np.sum((q - labels) * z), np.sum(q - labels)])
        w = q * (1 - q)
        hessian = np.array(
            [[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]
        ) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def choose_calibration(
    probabilities: np.ndarray, labels: np.ndarray, customer_ids: list[str]
) -> tuple[Calibration, dict[str, float]]:
    """Platt-scale only if it lowers the Brier score on data it was not fitted on (2-fold check).

    The folds are a hash of the customer id, so the slice is the same whatever the row order.
    """
    fold = np.array([hash_share(c, "calibration") % 2 == 0 for c in customer_ids], dtype=bool)
    raw, scaled = [], []
    for fit_mask in (fold, ~fold):
        if fit_mask.sum() < 50 or (~fit_mask).sum() < 50:
            return Calibration(method="none"), {}
        a, b = _platt(probabilities[fit_mask], labels[fit_mask])
        held = ~fit_mask
        raw.append(np.mean((probabilities[held] - labels[held]) ** 2))
        scaled.append(np.mean((calibrate(probabilities[held], a, b) - labels[held]) ** 2))
    brier_raw, brier_platt = float(np.mean(raw)), float(np.mean(scaled))
    check = {"validation_brier_raw": brier_raw, "validation_brier_platt": brier_platt}
    if brier_platt < brier_raw * 0.99:  # a real improvement, not noise
        a, b = _platt(probabilities, labels)
        return Calibration(method="platt", a=a, b=b), check
    return Calibration(method="none"), check
