"""The baselines a backtest compares the model with, fitted or computed at the origin on the
same customers: BG/NBD + Gamma-Gamma (`lifetimes`; a failure is reported, never fatal), the
spend-rate heuristic and a recency heuristic.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings

import numpy as np

from app.training import baselines
from app.training.backtest_plan import BacktestOptions
from app.training.backtest_scores import MethodScores, column
from app.training.baselines import FALLBACK_PENALIZERS


def _bg_nbd_purchases(parameters: dict[str, float], features: np.ndarray, days: int) -> np.ndarray:
    """BG/NBD's expected transactions (repeat order days) over the next `days`; 0 without orders."""
    import pandas as pd
    from lifetimes import BetaGeoFitter

    frequency, recency, age, _ = baselines.rfm(features)
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series({k: parameters[k] for k in ("r", "alpha", "a", "b")})
    expected = np.asarray(
        fitter.conditional_expected_number_of_purchases_up_to_time(days, frequency, recency, age),
        dtype=float,
    )
    has_orders = column(features, "orders") > 0
    return np.where(has_orders, np.nan_to_num(expected), 0.0)


def recency_heuristic(features: np.ndarray, horizon_days: int) -> MethodScores:
    """Spend rate for customers seen within one horizon, 0 for the others; churn = overdueness.

    Churn score = days since the last order / the customer's usual days between orders (a
    single-order customer's "usual gap" is their order age), so a weekly buyer silent for a
    month ranks above a yearly buyer silent for a month.
    """
    recency = column(features, "recency_days")
    has_orders = column(features, "orders") > 0
    per_day = np.maximum(column(features, "net_revenue"), 0.0) / np.maximum(
        column(features, "order_age_days"), 1.0
    )
    recent = has_orders & (recency <= horizon_days)
    usual_gap = np.nan_to_num(column(features, "mean_days_between_orders"), nan=0.0)
    usual_gap = np.where(usual_gap > 0, usual_gap, column(features, "order_age_days"))
    overdue = np.where(has_orders, recency / np.maximum(usual_gap, 1.0), np.inf)
    return MethodScores(
        clv=np.where(recent, per_day * horizon_days, 0.0),
        churn_score=np.nan_to_num(overdue, posinf=1e9),
        notes="CLV: spend rate if the last order is within one horizon, else 0; "
        "churn score: days since last order / usual days between orders",
    )


def spend_rate_heuristic(features: np.ndarray, horizon_days: int) -> MethodScores:
    """app.training.baselines.spend_rate: net revenue per day since the first order x horizon."""
    clv, churn = baselines.spend_rate(features, horizon_days)
    return MethodScores(
        clv=clv,
        churn_score=np.nan_to_num(churn, nan=1e9),
        notes="CLV: net revenue per day since the first order x horizon; churn score: recency",
    )


def bg_nbd_baseline(
    features: np.ndarray,
    options: BacktestOptions,
    penalizers: tuple[float, ...] = (0.0, *FALLBACK_PENALIZERS),
) -> MethodScores:
    """BG/NBD + Gamma-Gamma fitted at the origin on the same customers; failures are reported.

    With each of `penalizers` in turn (none first, then the fallbacks) until one fits, when
    `baselines.bg_nbd_gamma_gamma` takes a `penalizer_coef`. Every failed attempt is named.
    """
    takes_penalizer = "penalizer_coef" in inspect.signature(baselines.bg_nbd_gamma_gamma).parameters
    failures: list[str] = []
    for penalizer in penalizers if takes_penalizer else (0.0,):
        keyword = {"penalizer_coef": penalizer} if penalizer else {}
        try:
            # lifetimes/scipy print optimiser dumps on failure: keep them out of the table.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted = baselines.bg_nbd_gamma_gamma(
                    features,
                    features,
                    options.clv_horizon_days,
                    options.churn_horizon_days,
                    **keyword,
                )
                if fitted is None:
                    return MethodScores(
                        None, None, error="lifetimes is not installed (extra `train`)"
                    )
                probability = baselines.no_purchase_probability(
                    fitted.parameters, features, options.churn_horizon_days
                )
                purchases = _bg_nbd_purchases(fitted.parameters, features, options.clv_horizon_days)
                propensity = 1.0 - baselines.no_purchase_probability(
                    fitted.parameters, features, options.propensity_days
                )
        except Exception as exc:  # any failure of an optional comparison is reported, not raised
            message = " ".join(str(exc).split())[:200]
            failures.append(f"penalizer {penalizer:g}: {type(exc).__name__}: {message}")
            continue
        params = ", ".join(f"{k}={v:.4g}" for k, v in sorted(fitted.parameters.items()))
        return MethodScores(
            clv=fitted.clv,
            churn_score=fitted.churn_score,
            churn_probability=probability,
            orders=purchases,
            propensity=propensity,
            notes=f"lifetimes, fitted at the origin on these customers: {params}",
            extra={"penalizer": penalizer, "failed_fits": failures},
        )
    return MethodScores(None, None, error="; ".join(failures))
