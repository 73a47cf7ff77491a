"""`clv backtest` on a small synthetic history: metrics, determinism, failing baselines, the CLI."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app import schema
from app.cli import cli
from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader
from app.events.transactions import read_csv
from app.features.definitions import FEATURE_INDEX, parse_as_of
from app.features.repository import offline_matrix
from app.training.backtest import run_backtest
from app.training.backtest_baselines import bg_nbd_baseline, recency_heuristic
from app.training.backtest_plan import BacktestError, BacktestOptions
from app.training.backtest_tables import text_table
from app.training.baselines import FALLBACK_PENALIZERS
from app.training.options import TrainOptions, TrainResult
from app.training.train import train
from tests.conftest import CDNOW, create_database, demo_database, drop_database

pytestmark = pytest.mark.slow
END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)
LAST_ORIGIN = END - dt.timedelta(days=100)


@pytest.fixture(scope="module")
def backtest_db() -> Iterator[tuple[str, Engine]]:
    """A database of its own with 1,200 synthetic customers over three years."""
    with demo_database("clv_backtest", 1_200, 5, end=END) as database:
        yield database


def small_trainer(engine: Engine, options: TrainOptions) -> TrainResult:
    """`clv train`'s code with two stacked cutoffs, to keep the test quick."""
    return train(engine, dataclasses.replace(options, stack=2, stack_step_days=60))


def small_options(**overrides: Any) -> BacktestOptions:
    base: dict[str, Any] = {
        "last_origin": LAST_ORIGIN,
        "origins": 2,
        "step_days": 45,
        "clv_horizon_days": 90,
        "churn_horizon_days": 60,
        "threads": 2,
    }
    return BacktestOptions(**{**base, **overrides})


@pytest.fixture(scope="module")
def result(backtest_db: tuple[str, Engine]) -> dict[str, Any]:
    return run_backtest(backtest_db[1], small_options(), trainer=small_trainer)


def numbers(value: dict[str, Any]) -> str:
    """The result without timings and the code version (a commit landing between two runs
    changes it, not the numbers); the models' ONNX sha256 stay in."""
    kept = {k: v for k, v in value.items() if k != "run"}
    kept["origins"] = [
        {**e, "model": {k: v for k, v in e["model"].items() if k != "code_version"}}
        for e in kept["origins"]
    ]
    return json.dumps(kept, sort_keys=True)


def test_origins_are_rolling_and_oldest_first() -> None:
    origins = small_options(origins=3, step_days=30).origin_list()
    assert origins == [
        LAST_ORIGIN - dt.timedelta(days=60),
        LAST_ORIGIN - dt.timedelta(days=30),
        LAST_ORIGIN,
    ]


def test_every_origin_scores_every_known_customer(
    backtest_db: tuple[str, Engine], result: dict[str, Any]
) -> None:
    engine = backtest_db[1]
    assert [e["origin"] for e in result["origins"]] == [
        o.isoformat() for o in small_options().origin_list()
    ]
    for entry in result["origins"]:
        origin = dt.datetime.fromisoformat(entry["origin"])
        end = origin + dt.timedelta(days=90)
        with engine.connect() as connection:
            known = connection.execute(
                text("SELECT count(DISTINCT customer_id) FROM events WHERE occurred_at <= :o"),
                {"o": origin},
            ).scalar_one()
            # Independent of the label SQL (whatever it does with refunds): the next-period value
            # lies between the orders in the window minus every refund in it, and the orders.
            orders, refunds = connection.execute(
                text(
                    "SELECT coalesce(sum(amount) FILTER (WHERE type = 'order'), 0),"
                    " coalesce(sum(amount) FILTER (WHERE type = 'refund'), 0)"
                    " FROM events WHERE occurred_at > :o AND occurred_at <= :e"
                    " AND customer_id IN (SELECT customer_id FROM events WHERE occurred_at <= :o)"
                ),
                {"o": origin, "e": end},
            ).one()
        assert entry["customers"] == known
        assert float(orders - refunds) - 0.01 <= entry["actual_total"] <= float(orders) + 0.01
        assert entry["actual_total"] > 0
        model = entry["methods"]["model"]
        assert model["status"] == "ok", model
        assert sum(d["customers"] for d in model["deciles"]) == known
        assert model["predicted_total"] == pytest.approx(
            sum(d["customers"] * d["mean_predicted"] for d in model["deciles"]), rel=1e-9
        )
        # A trained model ranks far better than chance on the synthetic data.
        assert model["gini"] > 0.3
        assert model["auc"] > 0.65
        assert 0 < model["brier"] < 0.25
        for name, values in entry["methods"].items():
            if values["status"] == "ok":
                assert values["top10_share"] <= values["top10_share_ideal"] + 1e-12, name


def test_average_is_the_mean_over_origins(result: dict[str, Any]) -> None:
    for name in ("model", "spend_rate", "recency"):
        for metric in ("gini", "auc", "bias"):
            values = [e["methods"][name][metric] for e in result["origins"]]
            assert result["average"][name][metric] == pytest.approx(np.mean(values), rel=1e-12)


def test_verdict_names_every_loss_and_the_worst_origin(result: dict[str, Any]) -> None:
    v = result["verdict"]
    assert v["worst_origin"] is not None
    margins = []
    for entry in result["origins"]:
        model = entry["methods"]["model"]
        for name in ("bg_nbd_gamma_gamma", "spend_rate", "recency"):
            if entry["methods"][name]["status"] != "ok":
                continue
            for metric in ("gini", "spearman", "auc"):
                margin = model[metric] - entry["methods"][name][metric]
                margins.append(margin)
                listed = any(
                    loss["origin"] == entry["origin"]
                    and loss["baseline"] == name
                    and loss["metric"] == metric
                    for loss in v["losses"]
                )
                assert listed == (margin <= 0)
    assert v["worst_origin"]["margin"] == pytest.approx(min(margins))
    assert any(line.startswith("worst origin:") for line in v["lines"])


def test_same_command_twice_gives_the_same_numbers(
    backtest_db: tuple[str, Engine], result: dict[str, Any]
) -> None:
    again = run_backtest(backtest_db[1], small_options(), trainer=small_trainer)
    assert numbers(again) == numbers(result)


def test_a_failing_bg_nbd_is_reported_not_raised(
    backtest_db: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    # Real data that lifetimes cannot fit: only customers who never ordered twice, so the
    # Gamma-Gamma spend model has no repeat customer to learn from.
    matrix = offline_matrix(backtest_db[1], LAST_ORIGIN)
    single = matrix.values[matrix.values[:, FEATURE_INDEX["repeat_order_days"]] == 0]
    assert len(single) > 10
    scores = bg_nbd_baseline(single, small_options())
    assert scores.clv is None
    assert scores.error is not None
    assert "Error" in scores.error or "error" in scores.error
    assert capsys.readouterr().out == ""


def test_windows_past_the_end_of_the_log_are_refused(backtest_db: tuple[str, Engine]) -> None:
    with pytest.raises(BacktestError, match="incomplete"):
        run_backtest(
            backtest_db[1], small_options(last_origin=END - dt.timedelta(days=30)), small_trainer
        )
    with pytest.raises(BacktestError, match="first order"):
        run_backtest(
            backtest_db[1],
            small_options(last_origin=END - dt.timedelta(days=4 * 365)),
            small_trainer,
        )


def test_cli_prints_the_table_and_writes_json_and_html(
    backtest_db: tuple[str, Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLV_DATABASE_URL", backtest_db[0])
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(
            cli,
            [
                "backtest",
                "--last-origin",
                f"{LAST_ORIGIN:%Y-%m-%d}",
                "--origins",
                "1",
                "--clv-horizon-days",
                "90",
                "--churn-horizon-days",
                "60",
                "--threads",
                "2",
                "--json",
                str(tmp_path / "bt.json"),
                "--html",
                str(tmp_path / "bt.html"),
            ],
        )
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert "average over 1 origins" in out.stdout
    assert "worst origin:" in out.stdout
    saved = json.loads((tmp_path / "bt.json").read_text())
    assert saved["options"]["clv_horizon_days"] == 90
    assert saved["origins"][0]["methods"]["model"]["status"] == "ok"
    page = (tmp_path / "bt.html").read_text()
    assert "<script" not in page
    assert "BG/NBD + Gamma-Gamma" in page
    assert "Verdict" in page


ONLINE_RETAIL = CDNOW.parents[1] / "online-retail" / "transactions.csv"


def test_a_bg_nbd_fit_that_fails_is_refitted_with_a_fallback_penalizer_and_says_so() -> None:
    """A BG/NBD fit that does not converge: the backtest names that failure and compares with the
    fit that a fallback penalizer gives. The first fit is made to fail with a NaN penalizer (a NaN
    objective): whether the unpenalized fit converges on Online Retail differs between CPUs."""
    assert ONLINE_RETAIL.exists(), f"{ONLINE_RETAIL} is missing (../shared/data)"
    url = create_database("clv_backtest_retail")
    try:
        settings = Settings(database_url=url, currency="GBP")
        schema.upgrade("head", settings)
        engine = create_sync_engine(settings)
        loads = BulkLoader(engine, "GBP").load_all(
            (c, None) for c in read_csv(ONLINE_RETAIL, "GBP")
        )
        assert sum(s.events_created for s in loads) > 20_000
        matrix = offline_matrix(engine, parse_as_of("2011-06-11"))
        engine.dispose()
    finally:
        drop_database(url)
    scores = bg_nbd_baseline(
        matrix.values,
        small_options(clv_horizon_days=91, churn_horizon_days=91),
        penalizers=(float("nan"), *FALLBACK_PENALIZERS),
    )
    assert scores.error is None
    assert scores.clv is not None
    assert scores.churn_probability is not None
    assert scores.extra["penalizer"] in FALLBACK_PENALIZERS
    assert scores.extra["failed_fits"][0].startswith("penalizer nan: ConvergenceError")
    assert np.all((scores.churn_probability >= 0) & (scores.churn_probability <= 1))
    assert scores.clv.sum() > 0


def test_recency_heuristic_zeroes_lapsed_customers_and_ranks_overdue_ones_first() -> None:
    def customer(**values: float) -> np.ndarray:
        row = np.zeros(len(FEATURE_INDEX))
        for name, value in values.items():
            row[FEATURE_INDEX[name]] = value
        return row

    weekly_silent_month = customer(
        orders=20,
        recency_days=30,
        order_age_days=200,
        net_revenue=1000,
        mean_days_between_orders=7,
    )
    yearly_silent_month = customer(
        orders=3,
        recency_days=30,
        order_age_days=800,
        net_revenue=300,
        mean_days_between_orders=365,
    )
    lapsed = customer(
        orders=5,
        recency_days=400,
        order_age_days=900,
        net_revenue=500,
        mean_days_between_orders=100,
    )
    scores = recency_heuristic(
        np.vstack([weekly_silent_month, yearly_silent_month, lapsed]), horizon_days=90
    )
    assert scores.clv is not None
    assert scores.churn_score is not None
    assert scores.clv[2] == 0.0
    assert scores.clv[0] == pytest.approx(1000 / 200 * 90)
    assert scores.churn_score[0] > scores.churn_score[1]


def test_interval_orders_and_propensity_metrics_at_every_origin(
    backtest_db: tuple[str, Engine], result: dict[str, Any]
) -> None:
    """Issue 11: coverage of the 80 % CLV interval (overall = the deciles' weighted mean, with
    the two tails), orders MAE/bias and propensity AUC/Brier beside BG/NBD's."""
    engine = backtest_db[1]
    assert result["options"]["propensity_days"] == 30
    for entry in result["origins"]:
        origin = dt.datetime.fromisoformat(entry["origin"])
        with engine.connect() as connection:
            orders = connection.execute(
                text(
                    "SELECT count(*) FROM events WHERE type = 'order' AND occurred_at > :o"
                    " AND occurred_at <= :e"
                    " AND customer_id IN (SELECT customer_id FROM events WHERE occurred_at <= :o)"
                ),
                {"o": origin, "e": origin + dt.timedelta(days=90)},
            ).scalar_one()
        assert entry["actual_orders"] == orders
        assert 0 < entry["propensity_rate"] < 1
        model = entry["methods"]["model"]
        coverage = model["coverage_80"]
        assert coverage + model["below_p10"] + model["above_p90"] == pytest.approx(1.0)
        deciles = model["coverage_by_decile"]
        assert [d["decile"] for d in deciles] == list(range(1, 11))
        assert sum(d["customers"] for d in deciles) == entry["customers"]
        weighted = sum(d["coverage"] * d["customers"] for d in deciles) / entry["customers"]
        assert weighted == pytest.approx(coverage)
        # Calibrated for 80 % out of time; 1,200 synthetic customers and two short origins give
        # a noisy figure, but not the old 90 % of equal-tailed percentiles over an atom at 0.
        assert 0.6 < coverage < 0.9, coverage
        # The width is reported (a trivially wide or narrow interval would show) and the
        # calibration the artifact used, fitted before the origin.
        assert 0 <= model["width_median"]
        assert all(d["width_median"] >= 0 for d in deciles)
        if model["width_mean"] == 0:
            # Every bin's non-buyers alone exceed the level (90-day windows of a small shop):
            # [0, 0] for all, covering exactly the customers who bought nothing.
            assert coverage == pytest.approx(model["zero_share"])
        calibration = entry["model"]["clv_interval"]
        assert calibration["target_coverage"] == 0.80
        assert calibration["calibration_rows"] > 0
        assert model["orders_mae"] > 0
        assert model["orders_bias"] > 0
        assert model["propensity_auc"] > 0.6
        assert 0 < model["propensity_brier"] < 0.25
        bg = entry["methods"]["bg_nbd_gamma_gamma"]
        if bg["status"] == "ok":
            assert bg["orders_mae"] > 0
            assert bg["propensity_auc"] > 0.5
            assert bg["coverage_80"] is None  # BG/NBD gives no interval
    verdict = result["verdict"]
    assert verdict["coverage_within_bar_everywhere"] == (not verdict["coverage_misses"])
    text_out = text_table(result)
    assert "80 % CLV interval: coverage" in text_out
    assert "orders MAE" in text_out
