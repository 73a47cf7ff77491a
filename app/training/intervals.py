"""The CLV interval (`clv.p10/p50/p90`): calibrated for MARGINAL 80 % coverage out of time.

Fitted by `clv train` on the out-of-time fold (the fold model's predictions on the validation
customers at the latest cutoff, never on the window a backtest evaluates), weighted to the share
of non-buyers BG/NBD expects over the next horizon among the customers known now (label shift:
expected_non_buyers, label_shift_weights), stored in the manifest
as ratio tables by bin of predicted CLV (`clv_intervals`), applied by
app.scoring.predictor.clv_interval. Why this design and what it does not promise:
docs/predictions.md, "How the interval is built".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.scoring.predictor import clv_interval
from app.training.baselines import fit_bg_nbd, no_purchase_probability
from app.training.evaluate import BGNBD_FIT_SAMPLE

#: CLV interval calibration: at most this many bins of predicted CLV, at least this many rows each.
INTERVAL_BINS = 10
INTERVAL_MIN_ROWS = 50
#: The interval's target: share of customers whose actual CLV lies in [p10, p90] (marginal).
INTERVAL_COVERAGE = 0.80
#: The search range of the per-bin nominal level (see fit_intervals) and its bisection steps.
LEVEL_RANGE = (0.50, 0.99)
LEVEL_STEPS = 40
NON_BUYERS_METHOD = (
    "BG/NBD (lifetimes) fitted on the customers known at the training instant (a hash sample of "
    f"at most {BGNBD_FIT_SAMPLE:,} when there are more, as for the BG/NBD baseline), mean "
    "P(no order over the CLV horizon), 1 for customers without orders; the calibration rows "
    "weighted to that share of non-buyers (label shift)"
)
INTERVAL_METHOD = (
    "marginal-coverage interval, zero-aware: per bin of predicted CLV, quantiles of "
    "actual/predicted at a common nominal level (equal tails where the bin's zero share allows, "
    "else [0, level quantile]); the level found by bisection so that [p10, p90] as served covers "
    "the target share of the out-of-time calibration rows"
)


def _bin_table(
    ratios: list[np.ndarray], level: float
) -> tuple[list[float], list[float], list[float]]:
    """(lower, median, upper) ratio per bin at a nominal `level`.

    Equal tails, ((1 - level) / 2 each side), when fewer customers of the bin bought nothing than
    the lower tail holds; else the bin's lower percentile is the atom at 0 and [0, q(level)] holds
    `level` of it (all of its non-buyers and more when the zero share exceeds `level`: an interval
    containing 0 cannot cover less than the share of zeros).
    """
    tail = (1.0 - level) / 2
    low, mid, high = [], [], []
    for ratio in ratios:
        zero_share = float(np.mean(ratio == 0))

        def quantile(q: float, ratio: np.ndarray = ratio) -> float:
            # An observed ratio (no interpolation): never a sliver above the atom at 0.
            return float(np.quantile(ratio, q, method="inverted_cdf"))

        lo, hi = (
            (quantile(tail), quantile(1.0 - tail)) if zero_share < tail else (0.0, quantile(level))
        )
        low.append(lo)
        high.append(hi)
        mid.append(min(max(quantile(0.5), lo), hi))  # never crossing the bounds
    return low, mid, high


def served_coverage(
    predicted: np.ndarray, actual: np.ndarray, centers: list[float], table: tuple[list[float], ...]
) -> np.ndarray:
    """Per row: is the actual inside [p10, p90] as serving computes them (interpolated ratios
    times the prediction, rounded to cents like the API)?"""
    low = np.round(predicted * np.interp(predicted, centers, table[0]), 2)
    high = np.round(predicted * np.interp(predicted, centers, table[2]), 2)
    return np.asarray((actual >= low) & (actual <= high))


def fit_intervals(
    predicted: np.ndarray,
    actual: np.ndarray,
    gap_days: int,
    target: float = INTERVAL_COVERAGE,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """CLV p10 / p50 / p90 as ratio tables by bin of predicted CLV, calibrated so that [p10, p90]
    covers `target` of the out-of-time rows (the fold model's validation rows): MARGINAL coverage.

    Next-period revenue has an atom at 0, so equal-tailed 10 / 90 % percentiles cover ~90 % of a
    bin where over 10 % buy nothing (every non-buyer is inside). Here each bin gets the interval of
    a common nominal level (see _bin_table), and that level is found by bisection on the actual
    coverage of the served intervals (interpolated between bins, rounded to cents, rows predicted
    at 0 included with their [0, 0]): coverage is monotone in the level (the intervals are nested).
    Bins whose zero share exceeds the level cover that share (a floor no interval containing 0 can
    beat), so the others take a level below `target`: per-bin coverage varies, the report shows it.

    `weights` (one per row, default equal) weight the coverage the level search aims at, as in
    weighted split conformal prediction (Tibshirani et al., 2019): `clv train` passes
    label_shift_weights, which move the rows to the share of non-buyers expected next. The bins
    and their ratio quantiles stay unweighted: the shift moves the common level only.

    Serving multiplies a prediction by the ratios interpolated at it
    (app.scoring.predictor.clv_interval). Empty dict when there are too few rows to calibrate.
    """
    keep = predicted > 0
    p, y = predicted[keep], actual[keep]
    if len(p) < INTERVAL_MIN_ROWS:
        return {}
    bins = max(1, min(INTERVAL_BINS, len(p) // INTERVAL_MIN_ROWS))
    groups = np.array_split(np.argsort(p, kind="stable"), bins)
    ratio = y / p
    ratios = [ratio[group] for group in groups]
    centers = [float(np.median(p[group])) for group in groups]

    def coverage(level: float) -> float:
        table = _bin_table(ratios, level)
        covered = served_coverage(predicted, actual, centers, table)
        return float(np.average(covered, weights=weights))

    low, high = LEVEL_RANGE
    if coverage(low) >= target:
        level = low  # the zero shares alone cover more than the target: the floor, recorded
    elif coverage(high) <= target:
        level = high
    else:
        for _ in range(LEVEL_STEPS):
            middle = (low + high) / 2
            low, high = (middle, high) if coverage(middle) < target else (low, middle)
        level = high  # the smallest level found that reaches the target
    table = _bin_table(ratios, level)
    return {
        "method": INTERVAL_METHOD,
        "target_coverage": target,
        "nominal_level": level,
        "calibration_coverage": coverage(level),
        "fold": "out-of-time: the fold model's predictions on the validation rows at the latest "
        "cutoff (their labels never trained it)",
        "gap_days": gap_days,
        "calibration_rows": len(predicted),
        "rows_predicted_zero": int((~keep).sum()),
        "centers": centers,
        "rows": [len(group) for group in groups],
        "zero_share": [float(np.mean(r == 0)) for r in ratios],
        "p10": table[0],
        "p50": table[1],
        "p90": table[2],
    }


def expected_non_buyers(features: np.ndarray, horizon_days: int) -> dict[str, Any]:
    """The share of the customers of `features` (those known at the training instant, or a
    hash sample of them) that BG/NBD, fitted on them, expects to buy nothing over the next
    `horizon_days`: the prior the interval's calibration is shifted to (fit_intervals' weights).

    {"share": float, "method", "parameters", "penalizer", "customers"}, or {"share": None,
    "reason"} when lifetimes is missing or BG/NBD does not fit: the calibration is then left
    unweighted, and the manifest says why.
    """
    try:
        fitted = fit_bg_nbd(features)
    except ValueError as exc:
        return {"share": None, "reason": str(exc)}
    if fitted is None:
        return {"share": None, "reason": "lifetimes is not installed (extra `train`)"}
    share = float(np.mean(no_purchase_probability(fitted.parameters, features, horizon_days)))
    return {
        "share": share,
        "method": NON_BUYERS_METHOD,
        "parameters": fitted.parameters,
        "penalizer": fitted.penalizer,
        "customers": len(features),
    }


def label_shift_weights(labels: np.ndarray, share: float | None) -> np.ndarray | None:
    """Weights that give the calibration rows a share `share` of non-buyers (label 0) while
    keeping everything else about them: non-buyers share / fold share, buyers (1 - share) /
    (1 - fold share). The label-shift correction of conformal prediction (Podkopaev & Ramdas,
    2021): the rows' mix of buyers and non-buyers is moved to the one expected, not the rows.
    None (unweighted) without a share or when the rows hold only one of the two kinds."""
    if share is None or not len(labels):
        return None
    zeros = labels == 0
    fold = float(zeros.mean())
    if not 0.0 < fold < 1.0:
        return None
    share = min(max(share, 0.0), 1.0)
    weights: np.ndarray = np.where(zeros, share / fold, (1.0 - share) / (1.0 - fold))
    return weights


def interval_summary(
    clv: np.ndarray, actual: np.ndarray, low: np.ndarray, high: np.ndarray
) -> dict[str, Any]:
    """How an interval did against actuals: coverage of [p10, p90] (as served, in cents), the
    shares below p10 and above p90, the width of the interval (median and mean, so that a
    trivially wide or narrow interval shows), and by decile of predicted CLV (1 = highest) the
    customers, coverage, zero share of the actuals and median width."""
    low, high = np.round(low, 2), np.round(high, 2)
    covered = (actual >= low) & (actual <= high)
    width = high - low
    order = np.argsort(-clv, kind="stable")
    return {
        "coverage_80": float(covered.mean()),
        "below_p10": float((actual < low).mean()),
        "above_p90": float((actual > high).mean()),
        "zero_share": float((actual == 0).mean()),
        "width_median": float(np.median(width)),
        "width_mean": float(width.mean()),
        "coverage_by_decile": [
            {
                "decile": k + 1,
                "customers": len(part),
                "coverage": float(covered[part].mean()),
                "zero_actual_share": float((actual[part] == 0).mean()),
                "width_median": float(np.median(width[part])),
            }
            for k, part in enumerate(np.array_split(order, 10))
            if len(part)
        ],
    }


def holdout_coverage(
    clv: np.ndarray, actual: np.ndarray, intervals: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's record of the interval on holdout customers (never used to calibrate it):
    coverage, tails, width, and by decile of predicted CLV (1 = highest) coverage and zero share.
    """
    bounds = clv_interval(clv, intervals)
    if bounds is None or not len(clv):
        return {"coverage_80": None, "coverage_by_decile": []}
    summary = interval_summary(clv, actual, bounds[0], bounds[2])
    deciles = summary.pop("coverage_by_decile")
    return {
        **summary,
        "coverage_by_decile": [d["coverage"] for d in deciles],
        "zero_share_by_decile": [d["zero_actual_share"] for d in deciles],
        "width_median_by_decile": [d["width_median"] for d in deciles],
    }
