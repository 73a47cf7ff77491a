"""XGBoost fitting: parameters, monotone constraints, early stopping, the fixed-rounds refit.

Determinism: rows arrive in a data-defined order (app.training.dataset), row/column sampling is
seeded by `seed`, and boosting runs on a fixed `nthread` recorded in the manifest. XGBoost's
`hist` method sums gradient histograms per thread; with `deterministic_histogram` (the default)
the reduction order is fixed, and tests/training check that 1 and 2 threads give the same
predictions.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import xgboost as xgb
from tqdm import tqdm

from app.features.definitions import FEATURE_NAMES
from app.training.dataset import Rows

CLV_PARAMS: dict[str, Any] = {
    "objective": "reg:tweedie",
    "tweedie_variance_power": 1.3,
    "eval_metric": "tweedie-nloglik@1.3",
}
CHURN_PARAMS: dict[str, Any] = {"objective": "binary:logistic", "eval_metric": "logloss"}
#: Issue 11: orders over the CLV horizon (a count) and an order within the propensity window.
#: Orders use CLV's Tweedie objective, not count:poisson: out of time (bench/orders_objective.py,
#: 3 origins each of CDNOW and Online Retail) it had the lower orders MAE at 5 of 6 origins, the
#: lower Poisson deviance at 4 and a total closer to the actual at 5; it early-stops sooner, so
#: it extrapolates the ageing cohort's younger buying less (BENCHMARKS.md, issue 11 remainder).
ORDERS_PARAMS: dict[str, Any] = {
    "objective": "reg:tweedie",
    "tweedie_variance_power": 1.3,
    "eval_metric": "tweedie-nloglik@1.3",
}
PROPENSITY_PARAMS: dict[str, Any] = {"objective": "binary:logistic", "eval_metric": "logloss"}
TREE_PARAMS: dict[str, Any] = {
    "eta": 0.05,
    "max_depth": 3,
    "min_child_weight": 20.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "tree_method": "hist",
    "max_bin": 256,
}
MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 50
#: The refit on all rows never uses fewer trees than this (tiny validation sets stop early).
MIN_ROUNDS = 20

#: Directions where the economics is unambiguous (+1 = never lowers, -1 = never raises the
#: output). CLV: refunds never add value, net revenue never removes it. Together with refunds
#: moving only these features (app.features.definitions), a refund can never raise CLV.
CLV_MONOTONE: dict[str, int] = {
    "refunded_revenue": -1,
    "refunds": -1,
    "refund_rate": -1,
    "net_revenue": 1,
}
#: Churn: refunds never make a customer look less likely to leave.
CHURN_MONOTONE: dict[str, int] = {"refunded_revenue": 1, "refunds": 1, "refund_rate": 1}
#: Orders and propensity: refunds never make a next order look more likely (mirror of churn).
ORDERS_MONOTONE: dict[str, int] = {"refunded_revenue": -1, "refunds": -1, "refund_rate": -1}


def monotone(directions: dict[str, int]) -> str:
    """XGBoost's `monotone_constraints` string for FEATURE_NAMES."""
    return "(" + ",".join(str(directions.get(name, 0)) for name in FEATURE_NAMES) + ")"


def params(target: str, seed: int, threads: int) -> dict[str, Any]:
    """The full parameter set of one target, as recorded in the manifest."""
    base, directions = {
        "clv": (CLV_PARAMS, CLV_MONOTONE),
        "churn": (CHURN_PARAMS, CHURN_MONOTONE),
        "orders": (ORDERS_PARAMS, ORDERS_MONOTONE),
        "propensity": (PROPENSITY_PARAMS, ORDERS_MONOTONE),
    }[target]
    return {
        **TREE_PARAMS,
        **base,
        "monotone_constraints": monotone(directions),
        "seed": seed,
        "nthread": threads,
    }


class _Rounds(xgb.callback.TrainingCallback):
    """A progress bar over boosting rounds."""

    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.bar = tqdm(
            total=total, desc=f"boosting {name}", disable=None if enabled else True, file=sys.stderr
        )

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:  # noqa: ARG002
        self.bar.update(1)
        return False

    def after_training(self, model: Any) -> Any:
        self.bar.close()
        return model


def _matrix(rows: Rows) -> xgb.DMatrix:
    return xgb.DMatrix(rows.features.astype(np.float32), label=rows.label)


def fit_early_stopping(
    parameters: dict[str, Any], train: Rows, validation: Rows, name: str, progress: bool
) -> tuple[xgb.Booster, int]:
    """Fit on `train`, stop when `validation` stops improving; (trimmed booster, best rounds)."""
    booster = xgb.train(
        parameters,
        _matrix(train),
        num_boost_round=MAX_ROUNDS,
        evals=[(_matrix(validation), "validation")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
        callbacks=[_Rounds(name, MAX_ROUNDS, progress)],
    )
    rounds = max(booster.best_iteration + 1, MIN_ROUNDS)
    return trim(booster, rounds), rounds


def fit_rounds(
    parameters: dict[str, Any], train: Rows, rounds: int, name: str, progress: bool
) -> xgb.Booster:
    """Fit exactly `rounds` trees on `train` (the refit on every row)."""
    booster = xgb.train(
        parameters,
        _matrix(train),
        num_boost_round=rounds,
        verbose_eval=False,
        callbacks=[_Rounds(name, rounds, progress)],
    )
    return trim(booster, rounds)


def trim(booster: xgb.Booster, rounds: int) -> xgb.Booster:
    """The first `rounds` trees, single-threaded for export."""
    # Keep only the chosen trees, so ONNX and native agree without iteration_range.
    trimmed = booster[: min(rounds, booster.num_boosted_rounds())]
    trimmed.set_param({"nthread": 1})
    return trimmed


def importance(booster: xgb.Booster) -> list[tuple[str, float]]:
    """Share of total gain per feature, largest first."""
    gains = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}  # type: ignore[arg-type]
    total = sum(gains.values()) or 1.0
    named = [(FEATURE_NAMES[int(k[1:])], v / total) for k, v in gains.items()]
    return sorted(named, key=lambda kv: (-kv[1], kv[0]))
