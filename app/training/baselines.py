"""Baselines evaluated beside the model: a spend-rate heuristic and BG/NBD + Gamma-Gamma.

Both read the same feature matrix the model reads (no second definition of recency & co.).
BG/NBD needs the optional `lifetimes` package (`uv sync --extra train`); without it that
baseline is skipped and training carries on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.features.definitions import FEATURE_INDEX

logger = logging.getLogger(__name__)


def _column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FEATURE_INDEX[name]]


def spend_rate(features: np.ndarray, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    """(CLV, churn score): historical net revenue per day since the first order x horizon; recency."""
    per_day = _column(features, "net_revenue") / np.maximum(
        _column(features, "order_age_days"), 1.0
    )
    return np.maximum(per_day, 0.0) * horizon_days, _column(features, "recency_days")


@dataclass(frozen=True)
class BgNbdResult:
    """Per-customer predictions and the fitted parameters (for the report)."""

    clv: np.ndarray
    churn_score: np.ndarray
    parameters: dict[str, float]


#: BG/NBD is fitted without a penalizer (PROTOCOL.md); only when that does not converge are
#: these tried, in order, and the one that fitted is reported beside the figures.
FALLBACK_PENALIZERS = (0.001, 0.01, 0.1)


def rfm(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """lifetimes' (frequency, recency, T, monetary) with daily aggregation, from our features."""
    frequency = _column(features, "repeat_order_days")
    recency = _column(features, "order_span_days")
    age = np.floor(
        _column(features, "order_age_days")
    )  # whole days from first order day to as_of day
    repeat_spend = _column(features, "gross_revenue") - _column(features, "first_order_value")
    monetary = np.where(frequency > 0, repeat_spend / np.maximum(frequency, 1), 0.0)
    return frequency, recency, age, monetary


def bg_nbd_gamma_gamma(
    fit_features: np.ndarray,
    predict_features: np.ndarray,
    clv_horizon_days: int,
    churn_horizon_days: int,
    penalizer_coef: float = 0.0,
) -> BgNbdResult | None:
    """Fit BG/NBD + Gamma-Gamma (no penalizer) on `fit_features`, predict for `predict_features`.

    CLV = expected purchases over the horizon x expected spend per purchase; churn score =
    minus expected purchases over the churn horizon. Customers without an order get 0 CLV.
    `penalizer_coef` (both fitters) stays 0 for PROTOCOL.md; backtests may retry with one.
    """
    try:
        import pandas as pd
        from lifetimes import GammaGammaFitter
    except ImportError:
        logger.warning(
            "lifetimes is not installed: BG/NBD baseline skipped (uv sync --extra train)"
        )
        return None
    f, _, _, m = rfm(fit_features)
    buyers = _column(fit_features, "orders") > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgf = _fit_bg_nbd_model(fit_features, penalizer_coef)
        repeaters = buyers & (f > 0) & (m > 0)
        ggf = GammaGammaFitter(penalizer_coef=penalizer_coef)
        ggf.fit(pd.Series(f[repeaters]), pd.Series(m[repeaters]))
        pf, pr, pt, pm = rfm(predict_features)
        purchases = np.asarray(
            bgf.conditional_expected_number_of_purchases_up_to_time(clv_horizon_days, pf, pr, pt),
            dtype=np.float64,
        )
        churn_purchases = np.asarray(
            bgf.conditional_expected_number_of_purchases_up_to_time(churn_horizon_days, pf, pr, pt),
            dtype=np.float64,
        )
        spend = np.asarray(
            ggf.conditional_expected_average_profit(pd.Series(pf), pd.Series(pm)), dtype=np.float64
        )
    has_orders = _column(predict_features, "orders") > 0
    clv = np.where(has_orders, np.nan_to_num(purchases * spend), 0.0)
    churn = np.where(has_orders, -np.nan_to_num(churn_purchases), 0.0)
    parameters = {
        **{k: float(v) for k, v in bgf.params_.items()},
        **{f"gg_{k}": float(v) for k, v in ggf.params_.items()},
    }
    return BgNbdResult(clv=clv, churn_score=churn, parameters=parameters)


def no_purchase_probability(
    parameters: dict[str, float], features: np.ndarray, days: int
) -> np.ndarray:
    """BG/NBD P(no order in the next `days`): (1 - P(alive)) + P(alive) ((α+T)/(α+T+t))^(r+x);
    1 for a customer without orders.

    Exact under BG/NBD: a customer can only drop out right after a purchase, so without a
    purchase the alive/dead question is the only one left besides the Poisson wait.
    """
    import pandas as pd
    from lifetimes import BetaGeoFitter

    frequency, recency, age, _ = rfm(features)
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series({k: parameters[k] for k in ("r", "alpha", "a", "b")})
    alive = np.asarray(fitter.conditional_probability_alive(frequency, recency, age), dtype=float)
    r, alpha = parameters["r"], parameters["alpha"]
    wait = ((alpha + age) / (alpha + age + days)) ** (r + frequency)
    probability = (1.0 - alive) + alive * wait
    has_orders = _column(features, "orders") > 0
    return np.where(has_orders, np.clip(np.nan_to_num(probability, nan=1.0), 0.0, 1.0), 1.0)


@dataclass(frozen=True)
class BgNbdFit:
    """BG/NBD alone (no Gamma-Gamma), with the penalizer that fitted and the attempts that did not."""

    parameters: dict[str, float]
    penalizer: float
    failed_fits: list[str]


def _fit_bg_nbd_model(features: np.ndarray, penalizer: float) -> Any:
    """lifetimes' BetaGeoFitter fitted on the customers of `features` with orders."""
    import pandas as pd
    from lifetimes import BetaGeoFitter

    frequency, recency, age, _ = rfm(features)
    buyers = _column(features, "orders") > 0
    return BetaGeoFitter(penalizer_coef=penalizer).fit(
        pd.Series(frequency[buyers]), pd.Series(recency[buyers]), pd.Series(age[buyers])
    )


def fit_bg_nbd(
    features: np.ndarray, penalizers: tuple[float, ...] = (0.0, *FALLBACK_PENALIZERS)
) -> BgNbdFit | None:
    """Fit BG/NBD on the customers of `features` with orders, with each of `penalizers` in turn
    until one converges. None when `lifetimes` is not installed; ValueError naming every
    attempt when none converges (or no customer has an order)."""
    try:
        import lifetimes  # noqa: F401
    except ImportError:
        return None
    if not (_column(features, "orders") > 0).any():
        raise ValueError("no customer with an order to fit BG/NBD on")
    failures: list[str] = []
    for penalizer in penalizers:
        try:
            # lifetimes/scipy print optimiser dumps on failure: keep them out of the output.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitter = _fit_bg_nbd_model(features, penalizer)
        except Exception as exc:  # lifetimes raises ConvergenceError, scipy others
            message = " ".join(str(exc).split())[:200]
            failures.append(f"penalizer {penalizer:g}: {type(exc).__name__}: {message}")
            continue
        parameters = {k: float(v) for k, v in fitter.params_.items()}
        return BgNbdFit(parameters, penalizer, failures)
    raise ValueError("BG/NBD did not fit: " + "; ".join(failures))
