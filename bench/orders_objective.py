"""Expected orders out of time (issue 11): the served recipe against variants and BG/NBD.

At every backtest origin of CDNOW and Online Retail (bench/backtest.py's origins and horizons),
the orders model is fitted exactly as `clv train` fits it (same rows, split, early stopping on the
out-of-time fold, refit on every row with the fold's rounds), once per variant, and scored on every
customer known at the origin against the next horizon. BG/NBD's conditional expected
transactions count repeat *order days*; the label counts *orders*. So both are compared with both
actuals: orders (what the API promises) and order days (what BG/NBD models).

Variants (one change each from the issue-11 recipe, app.training.fit):
- `poisson`: the issue-11 model (count:poisson, early stopping on poisson-nloglik);
- `tweedie`: reg:tweedie 1.3, the CLV objective (served since this comparison);
- `squared`: reg:squarederror (an MAE-friendlier mean);
- `order_days`: count:poisson on order days in the window (BG/NBD's unit), scored against
  order days.

    .venv/bin/python -m bench.orders_objective [--only cdnow|online-retail] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.config import Settings
from app.db import create_sync_engine
from app.features.definitions import FEATURE_INDEX, end_of_day
from app.features.repository import offline_matrix
from app.training.backtest_baselines import bg_nbd_baseline
from app.training.backtest_plan import BacktestOptions
from app.training.dataset import Panel, orders_label, split_rows, training_cutoffs
from app.training.export import native_predict
from app.training.fit import fit_early_stopping, fit_rounds, params
from app.training.options import TrainOptions
from app.training.repository import data_fingerprint, window_labels
from bench.backtest import DATA_SETS, OUT, DataSet
from bench.common import fresh_database, run_clv

VARIANTS: dict[str, dict[str, Any]] = {
    "poisson": {"objective": "count:poisson", "eval_metric": "poisson-nloglik"},
    "tweedie": {
        "objective": "reg:tweedie",
        "tweedie_variance_power": 1.3,
        "eval_metric": "tweedie-nloglik@1.3",
    },
    "squared": {"objective": "reg:squarederror", "eval_metric": "rmse"},
    "order_days": {"objective": "count:poisson", "eval_metric": "poisson-nloglik"},
}


def order_days_after(engine: Engine, start: dt.datetime, days: int, ids: list[str]) -> np.ndarray:
    """Distinct order days in (start, start + days]: the order_days feature's growth."""
    before = offline_matrix(engine, start)
    after = offline_matrix(engine, start + dt.timedelta(days=days))
    column = FEATURE_INDEX["order_days"]
    b = dict(zip(before.customer_ids, before.values[:, column], strict=True))
    a = dict(zip(after.customer_ids, after.values[:, column], strict=True))
    return np.array([a.get(c, 0.0) - b.get(c, 0.0) for c in ids], dtype=np.float64)


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean Poisson deviance (the proper score of an expected count)."""
    mu = np.maximum(mu, 1e-9)
    term = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(np.mean(2.0 * (term - (y - mu))))


def metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    return {
        "mae": float(np.mean(np.abs(predicted - actual))),
        "bias": float(predicted.sum() / actual.sum()),
        "deviance": poisson_deviance(actual, predicted),
    }


def run_origin(engine: Engine, data: DataSet, origin: dt.datetime, threads: int) -> dict[str, Any]:
    options = TrainOptions(
        as_of=origin,
        model_dir=OUT,
        clv_horizon_days=data.horizon_days,
        churn_horizon_days=data.horizon_days,
        threads=threads,
        progress=False,
    )
    horizon = data.horizon_days
    first = data_fingerprint(engine)["min_occurred_at"]
    cutoffs = training_cutoffs(
        origin,
        horizon,
        options.stack,
        options.stack_step_days,
        dt.datetime.fromisoformat(first) if first else None,
    )
    panel = Panel(engine, False)
    matrix = offline_matrix(engine, origin)
    _, orders_actual = window_labels(engine, origin, horizon, matrix.customer_ids)
    days_actual = order_days_after(engine, origin, horizon, matrix.customer_ids)
    out: dict[str, Any] = {"origin": origin.date().isoformat(), "customers": len(matrix)}
    for variant, change in VARIANTS.items():
        rows = panel.rows(cutoffs, horizon, orders_label)
        if variant == "order_days":
            # Rows are stacked cutoff by cutoff (index i = cutoffs[i]), customers in id order.
            rows.label = np.concatenate(
                [order_days_after(engine, c, horizon, panel.at(c).customer_ids) for c in cutoffs]
            )
        split = split_rows(
            rows,
            cutoffs,
            horizon,
            options.holdout_fraction,
            options.split,
            options.validation_fraction,
            options.seed,
        )
        parameters = {
            k: v
            for k, v in {**params("orders", options.seed, threads), **change}.items()
            if k != "tweedie_variance_power"
            or change.get("objective", "reg:tweedie") == "reg:tweedie"
        }
        _, rounds = fit_early_stopping(parameters, split.fold, split.validation, variant, False)
        final = fit_rounds(parameters, split.train, rounds, variant, False)
        predicted = np.maximum(native_predict(final, matrix.values), 0.0)
        out[variant] = {
            "rounds": rounds,
            "vs_orders": metrics(predicted, orders_actual.astype(np.float64)),
            "vs_order_days": metrics(predicted, days_actual),
        }
        print(f"  {origin:%Y-%m-%d} {variant}: {out[variant]}", file=sys.stderr)
    bg = bg_nbd_baseline(
        matrix.values,
        BacktestOptions(
            last_origin=origin,
            clv_horizon_days=horizon,
            churn_horizon_days=horizon,
            threads=threads,
        ),
    )
    if bg.orders is not None:
        out["bg_nbd"] = {
            "vs_orders": metrics(bg.orders, orders_actual.astype(np.float64)),
            "vs_order_days": metrics(bg.orders, days_actual),
        }
    out["orders_per_order_day"] = float(orders_actual.sum() / max(days_actual.sum(), 1.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=[d.key for d in DATA_SETS])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for data in DATA_SETS:
        if args.only and data.key != args.only:
            continue
        with fresh_database("clv_bench_orders") as url:
            env = {"CLV_DATABASE_URL": url, "CLV_CURRENCY": data.currency}
            run_clv(env, "import-transactions", "--format", data.format, str(data.path))
            engine = create_sync_engine(Settings(database_url=url))
            last = end_of_day(dt.date.fromisoformat(data.last_origin))
            origins = [
                last - dt.timedelta(days=k * data.step_days) for k in reversed(range(data.origins))
            ]
            results[data.key] = [run_origin(engine, data, o, args.threads) for o in origins]
            engine.dispose()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"orders-objective{'-' + args.only if args.only else ''}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
