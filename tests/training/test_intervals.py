"""Issue 11: CLV intervals (calibration and serving), and training's eligibility minimums."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from app import schema
from app.config import Settings
from app.db import create_sync_engine
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader
from app.features.definitions import FEATURE_NAMES
from app.scoring.predictor import clv_interval
from app.training.baselines import no_purchase_probability
from app.training.calibration import fit_intervals
from app.training.eligibility import MIN_CUSTOMERS_WITH_ORDERS
from app.training.intervals import label_shift_weights
from app.training.options import NotEligible, TrainingFailed, TrainOptions
from app.training.train import train
from tests.conftest import create_database, drop_database

END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)


def zero_inflated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, actual): actual is 0 with a probability falling with the prediction, else a
    lognormal around it, so the spread grows with the level (like next-period revenue)."""
    predicted = rng.lognormal(3.0, 1.0, n)
    buys = rng.random(n) < 1 - np.exp(-predicted / 40)
    actual = np.where(buys, predicted * rng.lognormal(0.3, 0.8, n), 0.0)
    return predicted, actual


def test_intervals_cover_80_percent_of_new_rows_from_the_same_law() -> None:
    rng = np.random.default_rng(11)
    predicted, actual = zero_inflated(rng, 20_000)
    intervals = fit_intervals(predicted, actual, gap_days=90)
    assert intervals["calibration_rows"] == 20_000
    assert len(intervals["centers"]) == 10
    fresh_predicted, fresh_actual = zero_inflated(rng, 20_000)
    bounds = clv_interval(fresh_predicted, intervals)
    assert bounds is not None
    low, _, high = bounds
    covered = (fresh_actual >= np.round(low, 2)) & (fresh_actual <= np.round(high, 2))
    # Exchangeable rows: the marginal coverage calibrated on the first sample holds on the second
    # up to sampling noise (~0.003 on 20,000 rows), the atom at 0 included.
    assert intervals["calibration_coverage"] == pytest.approx(0.80, abs=0.005)
    assert covered.mean() == pytest.approx(0.80, abs=0.02), covered.mean()
    # Both tails are used: buyers-to-be predicted high get a lower bound above 0.
    assert (fresh_actual < np.round(low, 2)).mean() > 0.01


def test_quantiles_never_cross_and_scale_with_the_prediction() -> None:
    rng = np.random.default_rng(3)
    predicted, actual = zero_inflated(rng, 3_000)
    intervals = fit_intervals(predicted, actual, gap_days=0)
    probe = np.concatenate([[0.0, 1e-6, 1e9], rng.lognormal(3.0, 2.0, 5_000)])
    bounds = clv_interval(probe, intervals)
    assert bounds is not None
    low, mid, high = bounds
    assert np.all(low <= mid)
    assert np.all(mid <= high)
    assert np.all(low >= 0)
    assert (low[0], mid[0], high[0]) == (0.0, 0.0, 0.0)  # nothing expected: [0, 0]
    # Beyond the last bin the ratios are held flat: the interval scales with the prediction.
    assert high[2] == pytest.approx(1e9 * intervals["p90"][-1])


def test_too_few_rows_give_no_intervals_and_serving_says_none() -> None:
    assert fit_intervals(np.ones(10), np.ones(10), gap_days=0) == {}
    assert clv_interval(np.ones(3), {}) is None


@pytest.fixture(scope="module")
def engine_with(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A database with `param` synthetic customers over `days` days up to END."""
    customers, days = request.param
    url = create_database("clv_eligible")
    settings = Settings(database_url=url)
    schema.upgrade("head", settings)
    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, "USD")
    for chunk in generate_demo(customers, 9, start=END - dt.timedelta(days=days), end=END):
        loader.load(chunk.events, chunk.customers)
    yield engine
    engine.dispose()
    drop_database(url)


def options(model_dir: Path, **overrides: object) -> TrainOptions:
    base: dict[str, object] = {
        "as_of": END,
        "model_dir": model_dir,
        "clv_horizon_days": 180,
        "churn_horizon_days": 90,
        "stack": 2,
        "progress": False,
        "threads": 1,
    }
    return TrainOptions(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize("engine_with", [(60, 400)], indirect=True)
def test_too_small_a_shop_is_refused_with_every_reason(engine_with: Engine, tmp_path: Path) -> None:
    with pytest.raises(NotEligible) as caught:
        train(engine_with, options(tmp_path / "models"))
    message = str(caught.value)
    assert isinstance(caught.value, TrainingFailed)  # the CLI's existing error path
    assert message.startswith("not enough data to train on: ")
    assert f"need at least {MIN_CUSTOMERS_WITH_ORDERS}" in message
    assert "customers with an order by the latest CLV cutoff 2026-01-01" in message
    assert "docs/predictions.md" in message
    # Nothing was written: no artifact, no pointer.
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.mark.parametrize("engine_with", [(1_200, 400)], indirect=True)
def test_history_shorter_than_the_horizons_is_refused(engine_with: Engine, tmp_path: Path) -> None:
    with pytest.raises(
        NotEligible, match=r"history of 399 days .* need at least 410 \(the longest"
    ):
        train(engine_with, options(tmp_path / "a", clv_horizon_days=380))
    # The same shop with horizons its history covers trains, and the manifest says on what.
    result = train(engine_with, options(tmp_path / "b"))
    eligibility = result.manifest.eligibility
    assert eligibility["history_days"] == 399
    assert eligibility["customers_with_orders_at_latest_cutoff"] >= MIN_CUSTOMERS_WITH_ORDERS
    assert eligibility["minimums"]["customers_with_orders"] == MIN_CUSTOMERS_WITH_ORDERS
    assert eligibility["first_event"] is not None
    assert eligibility["last_event"] is not None
    assert sum(eligibility["events_by_type"].values()) > 0
    assert result.manifest.propensity_days == 30
    intervals = result.manifest.clv_intervals
    assert intervals["calibration_rows"] > 0
    # The calibration is recorded: what it aimed at, the level it chose, what it reached.
    assert intervals["target_coverage"] == 0.80
    assert 0.5 <= intervals["nominal_level"] <= 0.99
    assert intervals["calibration_coverage"] == pytest.approx(0.80, abs=0.02)
    assert intervals["fold"].startswith("out-of-time")
    # Shifted to the share of non-buyers BG/NBD expects among the customers known at as_of.
    non_buyers = intervals["non_buyers"]
    assert 0.0 < non_buyers["fold_share"] < 1.0
    assert 0.0 < non_buyers["share"] < 1.0
    assert set(non_buyers["parameters"]) == {"r", "alpha", "a", "b"}
    assert non_buyers["customers"] == eligibility["customers"]  # all of them: under the sample cap
    # Holdout customers (never used to calibrate), same period: 80 % up to sampling noise
    # (three standard errors of a share over that many customers).
    holdout = result.manifest.rows["clv_holdout"]
    noise = 3 * (0.8 * 0.2 / holdout) ** 0.5
    assert intervals["coverage_80"] == pytest.approx(0.80, abs=noise + 0.02), holdout
    assert intervals["below_p10"] + intervals["above_p90"] == pytest.approx(
        1 - intervals["coverage_80"]
    )
    assert intervals["width_median"] >= 0
    assert 0.5 < intervals["coverage_80_in_time"] <= 1.0
    assert len(intervals["coverage_by_decile"]) == 10
    assert len(intervals["zero_share_by_decile"]) == 10
    assert set(result.manifest.parity.extra) == {"orders", "propensity", "combined"}
    # The combined graph is exact: the same nodes as the four files.
    assert result.manifest.parity.extra["combined"]["max_abs_diff"] == 0.0
    assert result.manifest.files["combined_onnx"] == "all.onnx"


def test_label_shift_to_the_window_s_share_of_non_buyers_restores_coverage() -> None:
    """Rows of a window with more non-buyers than the calibration rows, everything else equal
    (label shift): shifted to that share, the calibration covers 80 % of them; unweighted, it
    covers more (every extra non-buyer is inside)."""
    rng = np.random.default_rng(5)
    predicted, actual = zero_inflated(rng, 20_000)
    fold_share = float(np.mean(actual == 0))
    target_share = fold_share + 0.10
    fresh_p, fresh_y = zero_inflated(rng, 60_000)
    zeros, buyers = np.flatnonzero(fresh_y == 0), np.flatnonzero(fresh_y > 0)
    n = 20_000
    pick = np.r_[
        rng.choice(zeros, round(n * target_share)), rng.choice(buyers, n - round(n * target_share))
    ]
    window_p, window_y = fresh_p[pick], fresh_y[pick]

    def coverage(intervals: dict[str, object]) -> float:
        bounds = clv_interval(window_p, intervals)
        assert bounds is not None
        return float(
            ((window_y >= np.round(bounds[0], 2)) & (window_y <= np.round(bounds[2], 2))).mean()
        )

    weights = label_shift_weights(actual, target_share)
    assert weights is not None
    assert np.average(actual == 0, weights=weights) == pytest.approx(target_share)
    shifted = fit_intervals(predicted, actual, gap_days=0, weights=weights)
    plain = fit_intervals(predicted, actual, gap_days=0)
    assert coverage(shifted) == pytest.approx(0.80, abs=0.015)
    assert coverage(plain) > 0.80 + 0.025
    # Nothing to shift to, or only one kind of row: unweighted.
    assert label_shift_weights(actual, None) is None
    assert label_shift_weights(np.zeros(10), 0.5) is None


def test_bg_nbd_no_order_probability_of_a_first_time_buyer_is_its_unconditional_one() -> None:
    """One order today (x = 0, t_x = 0, T = 0): alive for sure, so P(no order in t) is BG/NBD's
    unconditional P(X(t) = 0) = (alpha / (alpha + t))^r, which lifetimes computes itself."""
    pd = pytest.importorskip("pandas")
    lifetimes = pytest.importorskip("lifetimes")
    parameters = {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.43}
    row = np.zeros((1, len(FEATURE_NAMES)))
    row[0, FEATURE_NAMES.index("orders")] = 1
    fitter = lifetimes.BetaGeoFitter()
    fitter.params_ = pd.Series(parameters)
    for days in (7, 30, 181):
        ours = no_purchase_probability(parameters, row, days)[0]
        assert ours == pytest.approx(float(fitter.probability_of_n_purchases_up_to_time(days, 0)))
    # More time, fewer customers who stay silent; nobody without orders ever buys here.
    many = np.repeat(row, 2, axis=0)
    many[1, FEATURE_NAMES.index("orders")] = 0
    short, long = (no_purchase_probability(parameters, many, d) for d in (30, 365))
    assert long[0] < short[0] < 1.0
    assert short[1] == long[1] == 1.0
