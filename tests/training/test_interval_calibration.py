"""Issue 11: the 80 % CLV interval's calibration (marginal coverage, zero-aware) on real CDNOW data.

The predictions come from a spend-rate rule on the real log (no model to train, so these run in
a second): what matters here is the calibration given realistic, zero-heavy next-period revenue.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from app.scoring.predictor import clv_interval
from app.training.intervals import INTERVAL_COVERAGE, LEVEL_RANGE, fit_intervals
from tests.conftest import CDNOW

HORIZON = 181


@pytest.fixture(scope="module")
def cdnow() -> np.ndarray:
    assert CDNOW.exists(), f"{CDNOW} is missing (../shared/data)"
    return np.loadtxt(CDNOW, skiprows=1)  # customer, yyyymmdd, CDs, dollars


def window(log: np.ndarray, cutoff: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(customer ids, predicted, actual) for customers known by `cutoff`: a spend-rate prediction
    from the orders up to the cutoff, the actual spend in the next HORIZON days."""
    day = np.array(
        [dt.date(int(d) // 10000, int(d) // 100 % 100, int(d) % 100).toordinal() for d in log[:, 1]]
    )
    cut = dt.date.fromisoformat(cutoff).toordinal()
    ids = log[:, 0].astype(np.int64)
    before, after = day <= cut, (day > cut) & (day <= cut + HORIZON)
    customers = np.unique(ids[before])
    index = np.searchsorted(customers, ids)
    known = np.isin(ids, customers)
    n = len(customers)
    spent = np.bincount(index[before], log[before, 3], minlength=n)
    first = np.full(n, cut)
    last = np.zeros(n, dtype=np.int64)
    np.minimum.at(first, index[before], day[before])
    np.maximum.at(last, index[before], day[before])
    rate = spent / np.maximum(cut - first, 30)
    predicted = rate * HORIZON * np.exp(-(cut - last) / HORIZON)
    actual = np.bincount(index[after & known], log[after & known, 3], minlength=n)
    return customers, predicted, actual


def covered(intervals: dict[str, Any], predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    bounds = clv_interval(predicted, intervals)
    assert bounds is not None
    low, _, high = bounds
    return np.asarray((actual >= np.round(low, 2)) & (actual <= np.round(high, 2)))


def test_calibrated_on_half_the_customers_it_covers_80_percent_of_the_other_half(
    cdnow: np.ndarray,
) -> None:
    customers, predicted, actual = window(cdnow, "1997-09-30")
    first_half = customers % 2 == 0
    intervals = fit_intervals(predicted[first_half], actual[first_half], gap_days=0)
    assert intervals["calibration_rows"] == first_half.sum()
    assert intervals["calibration_coverage"] == pytest.approx(INTERVAL_COVERAGE, abs=0.01)
    held_out = covered(intervals, predicted[~first_half], actual[~first_half])
    # ~11,700 exchangeable customers: sampling noise of a share is ~0.004.
    assert held_out.mean() == pytest.approx(INTERVAL_COVERAGE, abs=0.025), held_out.mean()
    # Next-period revenue is zero-heavy: the old equal-tailed 10 / 90 % percentiles overcover.
    ratio = actual[first_half] / np.maximum(predicted[first_half], 1e-12)
    assert np.mean(actual[first_half] == 0) > 0.5
    assert np.mean(ratio <= np.quantile(ratio, 0.9)) > INTERVAL_COVERAGE + 0.05


def test_lower_bound_is_zero_exactly_where_the_bin_zero_share_fills_the_lower_tail(
    cdnow: np.ndarray,
) -> None:
    _, predicted, actual = window(cdnow, "1997-06-30")
    intervals = fit_intervals(predicted, actual, gap_days=0)
    tail = (1 - intervals["nominal_level"]) / 2
    for zero_share, low, mid, high in zip(
        intervals["zero_share"], intervals["p10"], intervals["p50"], intervals["p90"], strict=True
    ):
        assert (low > 0) == (zero_share < tail), (zero_share, low)
        assert 0 <= low <= mid <= high
        if zero_share >= intervals["nominal_level"]:
            assert high == 0  # [0, 0]: the bin's zeros alone hold more than the level


def test_intervals_are_nested_in_the_target_and_never_cross(cdnow: np.ndarray) -> None:
    _, predicted, actual = window(cdnow, "1997-09-30")
    narrow = fit_intervals(predicted, actual, gap_days=0, target=0.78)
    wide = fit_intervals(predicted, actual, gap_days=0, target=0.85)
    assert narrow["nominal_level"] < wide["nominal_level"]
    assert narrow["calibration_coverage"] < wide["calibration_coverage"]
    probe = np.concatenate([[0.0, 1e-6, 1e7], predicted])
    low_n, mid_n, high_n = clv_interval(probe, narrow)  # type: ignore[misc]
    low_w, _, high_w = clv_interval(probe, wide)  # type: ignore[misc]
    assert np.all(low_w <= low_n + 1e-9)
    assert np.all(high_n <= high_w + 1e-9)
    assert np.all((0 <= low_n) & (low_n <= mid_n) & (mid_n <= high_n))
    assert (low_n[0], high_n[0]) == (0.0, 0.0)  # nothing predicted: [0, 0]


def test_a_target_below_the_zero_floor_is_not_reached_and_says_so(cdnow: np.ndarray) -> None:
    _, predicted, actual = window(cdnow, "1997-09-30")
    zero_share = float(np.mean(actual == 0))
    intervals = fit_intervals(predicted, actual, gap_days=0, target=zero_share / 2)
    # Every interval holds 0 at the lowest level searched: coverage cannot fall below the zeros.
    assert intervals["nominal_level"] == LEVEL_RANGE[0]
    assert intervals["calibration_coverage"] >= zero_share - 0.01
    assert intervals["calibration_coverage"] > intervals["target_coverage"]


def test_weights_reweight_the_coverage_aimed_at_and_equal_weights_change_nothing(
    cdnow: np.ndarray,
) -> None:
    _, predicted, actual = window(cdnow, "1997-09-30")
    plain = fit_intervals(predicted, actual, gap_days=0)
    assert fit_intervals(predicted, actual, gap_days=0, weights=np.full(len(actual), 3.0)) == plain
    # Rows reweighted to a window with more non-buyers (label shift): every non-buyer is
    # covered, so the level needed for 80 % falls, and the weighted coverage still reaches it.
    zeros = actual == 0
    share, shifted = float(zeros.mean()), float(zeros.mean()) + 0.05
    weights = np.where(zeros, shifted / share, (1 - shifted) / (1 - share))
    moved = fit_intervals(predicted, actual, gap_days=0, weights=weights)
    assert moved["nominal_level"] < plain["nominal_level"]
    reached = np.average(covered(moved, predicted, actual), weights=weights)
    assert reached == pytest.approx(INTERVAL_COVERAGE, abs=0.01)
    assert covered(moved, predicted, actual).mean() < covered(plain, predicted, actual).mean()
