"""The scores of one customer: what every channel (API, files, stored runs) shows."""

from __future__ import annotations

from dataclasses import dataclass

from app.scoring.evidence import Basis
from app.scoring.lifecycle import LifecycleStage, ValueTier


@dataclass(frozen=True)
class Score:
    """One customer's scores, rounded once here so every channel shows the same numbers."""

    customer_id: str
    clv: float
    churn_probability: float
    lifecycle_stage: LifecycleStage
    value_tier: ValueTier
    expected_value_at_risk: float
    basis: Basis = "history"
    # Issue 11; None when the model has no intervals / orders / propensity model.
    clv_p10: float | None = None
    clv_p50: float | None = None
    clv_p90: float | None = None
    expected_orders: float | None = None
    order_probability: float | None = None
