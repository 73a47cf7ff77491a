"""Holdout evaluation: the model (in time and out of time) beside the baselines, on the same rows.

Baselines are optional comparisons: one that fails (lifetimes' ConvergenceError on a log it
cannot fit, a missing package...) is recorded with its reason and training goes on. Whatever a
library prints while fitting is kept off stdout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.training import baselines, metrics
from app.training.dataset import Panel, Rows
from app.training.report_scores import EvaluatedModel

#: BG/NBD is fitted on at most this many customers (lifetimes is slow on millions), picked by a
#: hash of the customer id so the sample is the same whatever the row order.
BGNBD_FIT_SAMPLE = 100_000
BGNBD = "bg_nbd_gamma_gamma"


@dataclass
class Evaluation:
    """Metrics per model/baseline, the report entries, and the baselines that could not run."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    entries: list[EvaluatedModel] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def score(
    clv_actual: np.ndarray,
    churned: np.ndarray,
    clv: np.ndarray,
    churn: np.ndarray,
    probability: bool = True,
) -> dict[str, float]:
    """CLV and churn metrics of one set of predictions."""
    return {
        **metrics.clv_metrics(clv_actual, clv),
        **metrics.churn_metrics(churned, churn, churn if probability else None),
    }


def _quietly(fit: Any, *args: Any) -> Any:
    """Run a baseline fit with stdout captured (lifetimes prints scipy's result on failure)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fit(*args)


def _reason(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else 'no message'}"


def evaluate(
    panel: Panel,
    clv_cutoff: dt.datetime,
    churn_cutoff: dt.datetime,
    holdout_clv: Rows,
    holdout_churn: Rows,
    model: tuple[np.ndarray, np.ndarray],
    importance: dict[str, list[tuple[str, float]]],
    horizons: tuple[int, int],
    with_baselines: bool,
    penalizer: float = 0.0,
) -> Evaluation:
    """The model's holdout metrics, then the spend-rate heuristic and (optionally) BG/NBD + GG."""
    clv_days, churn_days = horizons
    clv_actual, churned = holdout_clv.label, holdout_churn.label
    out = Evaluation()

    def add(name: str, clv: np.ndarray, churn: np.ndarray, probability: bool, **extra: Any) -> None:
        out.metrics[name] = score(clv_actual, churned, clv, churn, probability)
        out.entries.append(
            EvaluatedModel(
                name=name,
                clv_predicted=clv,
                churn_score=churn,
                churn_probability=churn if probability else None,
                **extra,
            )
        )

    add("model", model[0], model[1], True, feature_importance=importance)
    rate_clv, _ = baselines.spend_rate(holdout_clv.features, clv_days)
    _, rate_churn = baselines.spend_rate(holdout_churn.features, clv_days)
    add(
        "spend_rate",
        rate_clv,
        rate_churn,
        False,
        notes="net revenue per day since first order x horizon; churn score = recency",
    )
    if not with_baselines:
        return out
    try:
        bg = _quietly(
            baselines.bg_nbd_gamma_gamma,
            panel.sample(clv_cutoff, BGNBD_FIT_SAMPLE),
            holdout_clv.features,
            clv_days,
            churn_days,
            penalizer,
        )
        if bg is None:
            out.failures[BGNBD] = "skipped: the optional `lifetimes` package is not installed"
            return out
        churn_score = bg.churn_score
        if churn_cutoff != clv_cutoff or holdout_clv.customer_ids != holdout_churn.customer_ids:
            bg_churn = _quietly(
                baselines.bg_nbd_gamma_gamma,
                panel.sample(churn_cutoff, BGNBD_FIT_SAMPLE),
                holdout_churn.features,
                clv_days,
                churn_days,
                penalizer,
            )
            churn_score = bg_churn.churn_score
    except Exception as exc:
        out.failures[BGNBD] = _reason(exc)
        return out
    params = ", ".join(f"{k}={v:.3g}" for k, v in bg.parameters.items())
    add(BGNBD, bg.clv, churn_score, False, notes=f"lifetimes BG/NBD + Gamma-Gamma: {params}")
    return out
