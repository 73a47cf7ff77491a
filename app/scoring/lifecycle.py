"""Lifecycle stages and value tiers: the segment a retention team acts on.

Rules, first match wins (thresholds are settings):
- `prospect`: no order yet;
- `lapsed`:   no order for longer than the churn horizon;
- `new`:      first order within CLV_NEW_CUSTOMER_DAYS;
- `at_risk`:  churn probability above CLV_AT_RISK_THRESHOLD;
- `active`:   everyone else.
Value tiers compare predicted CLV with the percentiles of the model's own predictions over all
customers at training time (stored in the manifest): `top`, `high`, `medium`, `low`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from app.features.definitions import FEATURE_INDEX

LifecycleStage = Literal["prospect", "new", "active", "at_risk", "lapsed"]
ValueTier = Literal["top", "high", "medium", "low"]
STAGES: tuple[LifecycleStage, ...] = ("prospect", "new", "active", "at_risk", "lapsed")
TIERS: tuple[ValueTier, ...] = ("top", "high", "medium", "low")


def lifecycle_stages(
    features: np.ndarray,
    churn_probability: np.ndarray,
    *,
    churn_horizon_days: int,
    new_customer_days: int,
    at_risk_threshold: float,
) -> list[LifecycleStage]:
    """The stage of every row, by the rules in the module docstring."""
    if len(features) == 1:  # one prediction: the same comparisons on Python floats, no np.select
        return [
            _stage(
                float(features[0, FEATURE_INDEX["orders"]]),
                float(features[0, FEATURE_INDEX["recency_days"]]),
                float(features[0, FEATURE_INDEX["order_age_days"]]),
                float(churn_probability[0]),
                churn_horizon_days,
                new_customer_days,
                at_risk_threshold,
            )
        ]
    orders = features[:, FEATURE_INDEX["orders"]]
    recency = features[:, FEATURE_INDEX["recency_days"]]
    first_order_age = features[:, FEATURE_INDEX["order_age_days"]]
    stage = np.select(
        [
            orders == 0,
            recency > churn_horizon_days,
            first_order_age <= new_customer_days,
            churn_probability > at_risk_threshold,
        ],
        ["prospect", "lapsed", "new", "at_risk"],
        default="active",
    )
    return [str(s) for s in stage]  # type: ignore[misc]


def _stage(
    orders: float,
    recency: float,
    first_order_age: float,
    churn: float,
    churn_horizon_days: int,
    new_customer_days: int,
    at_risk_threshold: float,
) -> LifecycleStage:
    """One row's stage: the rules of `lifecycle_stages`, in the same order."""
    if orders == 0:
        return "prospect"
    if recency > churn_horizon_days:
        return "lapsed"
    if first_order_age <= new_customer_days:
        return "new"
    if churn > at_risk_threshold:
        return "at_risk"
    return "active"


def value_tiers(
    clv: np.ndarray, quantiles: dict[str, float], percentiles: tuple[int, int, int]
) -> list[ValueTier]:
    """The tier of every row: at or above the top/high/medium percentile of predicted CLV."""
    top, high, medium = (quantiles[f"p{p}"] for p in percentiles)
    if len(clv) == 1:
        value = float(clv[0])
        one: ValueTier = (
            "top"
            if value >= top
            else "high"
            if value >= high
            else "medium"
            if value >= medium
            else "low"
        )
        return [one]
    tier = np.select(
        [clv >= top, clv >= high, clv >= medium], ["top", "high", "medium"], default="low"
    )
    return [str(t) for t in tier]  # type: ignore[misc]
