"""Prediction payloads."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.ids import ExternalId
from app.scoring.evidence import Basis
from app.scoring.lifecycle import LifecycleStage, ValueTier


class ClvOut(BaseModel):
    """Expected net revenue (orders minus refunds) over the horizon."""

    value: float = Field(examples=[182.4], description="The expected (mean) value.")
    currency: str = Field(examples=["USD"])
    horizon_days: int = Field(examples=[365])
    p10: float | None = Field(
        default=None,
        examples=[0.0],
        description="Lower bound of the 80 % prediction interval [p10, p90], calibrated out of "
        "time for marginal coverage: about 80 % of all customers scored end inside it; per "
        "group of customers the share varies (docs/predictions.md). Null for models without "
        "intervals.",
    )
    p50: float | None = Field(
        default=None, examples=[96.1], description="Median, inside [p10, p90]."
    )
    p90: float | None = Field(
        default=None, examples=[455.0], description="Upper bound of the 80 % prediction interval."
    )


class ExpectedOrdersOut(BaseModel):
    """Expected number of orders over the CLV horizon."""

    value: float = Field(ge=0, examples=[2.4])
    horizon_days: int = Field(examples=[365])


class OrderProbabilityOut(BaseModel):
    """Probability of at least one order in the next `days` days."""

    probability: float = Field(ge=0, le=1, examples=[0.31])
    days: int = Field(examples=[30])


class ChurnOut(BaseModel):
    """Probability of no order over the horizon."""

    probability: float = Field(ge=0, le=1, examples=[0.27])
    horizon_days: int = Field(examples=[90])


class SegmentOut(BaseModel):
    """Where the customer stands (rules in the README)."""

    lifecycle_stage: LifecycleStage
    value_tier: ValueTier


class Reason(BaseModel):
    """One feature's contribution to a prediction, in numbers and words."""

    feature: str = Field(examples=["recency_days"])
    description: str = Field(examples=["Days since the last order"])
    value: float = Field(description="The customer's value of the feature.", examples=[12.0])
    contribution: float = Field(description="Margin units: log-revenue (CLV) or log-odds (churn).")
    text: str = Field(
        examples=["Days since the last order: 12 days raises expected revenue (x1.35)"]
    )


class ModelExplanation(BaseModel):
    """Exact decomposition: base_value + sum(contributions) == raw_margin (TreeSHAP for XGBoost,
    coefficient x standardised input for a linear challenger)."""

    base_value: float
    raw_margin: float
    reasons: list[Reason] = Field(description="The strongest contributions, largest first.")
    contributions: dict[str, float] = Field(description="Every feature's contribution.")


class OutOfRangeOut(BaseModel):
    """A feature value outside the range the model saw in training: trees extrapolate flat there."""

    feature: str = Field(examples=["tenure_days"])
    value: float = Field(examples=[1461.0])
    training_min: float = Field(examples=[0.0])
    training_max: float = Field(examples=[1095.0])


class ExplanationOut(BaseModel):
    """Why the model says what it says, for each of its two outputs."""

    clv: ModelExplanation
    churn: ModelExplanation
    out_of_range: list[OutOfRangeOut] = Field(
        default_factory=list,
        description="Features outside the model's training range (empty when none, or when the "
        "model's manifest records no ranges).",
    )


#: A coherent prediction: an active high-value customer, value at risk = CLV x churn (checked
#: against a real one by tests/test_openapi_examples.py).
PREDICTION_EXAMPLE: dict[str, Any] = {
    "customer_id": "cust-42",
    "as_of": "2026-11-30T00:00:00Z",
    "model_version": "20261124T175705Z-95b881",
    "clv": {
        "value": 182.4,
        "currency": "USD",
        "horizon_days": 365,
        "p10": 0.0,
        "p50": 96.1,
        "p90": 455.0,
    },
    "churn": {"probability": 0.27, "horizon_days": 90},
    "expected_orders": {"value": 2.4, "horizon_days": 365},
    "order_probability": {"probability": 0.31, "days": 30},
    "segment": {"lifecycle_stage": "active", "value_tier": "high"},
    "expected_value_at_risk": 49.25,
    "basis": "history",
    "scored_at": "2026-11-30T09:12:03.120571Z",
}


class PredictionOut(BaseModel):
    """CLV, churn probability and segment of one customer as of an instant."""

    model_config = ConfigDict(json_schema_extra={"examples": [PREDICTION_EXAMPLE]})

    customer_id: str
    as_of: dt.datetime
    model_version: str
    clv: ClvOut
    churn: ChurnOut
    expected_orders: ExpectedOrdersOut | None = Field(
        default=None, description="Null when the serving model predates it (issue 11)."
    )
    order_probability: OrderProbabilityOut | None = Field(
        default=None, description="Null when the serving model predates it (issue 11)."
    )
    segment: SegmentOut
    expected_value_at_risk: float = Field(
        description="CLV x churn probability: what retention can save."
    )
    basis: Basis = Field(
        description="What the numbers rest on: `history` (orders up to as_of), `no_orders` "
        "(sessions, views or carts but no order yet), `no_history` (no event at all up to as_of: "
        "the numbers are the model's prior for an empty history, not a forecast; see `notice`)."
    )
    notice: str | None = Field(
        default=None, description="Present when the numbers deserve a warning (`no_history`)."
    )
    scored_at: dt.datetime
    explanation: ExplanationOut | None = None


class BatchPredictionIn(BaseModel):
    """Customers to score in one set-based pass."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"customer_ids": ["cust-42", "cust-43"]}]}
    )

    customer_ids: Annotated[list[ExternalId], Field(min_length=1)]
    as_of: str | None = Field(
        default=None, description="RFC 3339 with offset, or YYYY-MM-DD (end of day). Default: now."
    )


class BatchPredictionItem(BaseModel):
    """The prediction of one requested id, or why there is none."""

    index: int
    customer_id: str
    status: Literal["ok", "not_found"]
    prediction: PredictionOut | None = None


BATCH_PREDICTION_EXAMPLE: dict[str, Any] = {
    "model_version": PREDICTION_EXAMPLE["model_version"],
    "as_of": PREDICTION_EXAMPLE["as_of"],
    "found": 1,
    "not_found": 1,
    "results": [
        {"index": 0, "customer_id": "cust-42", "status": "ok", "prediction": PREDICTION_EXAMPLE},
        {"index": 1, "customer_id": "cust-43", "status": "not_found"},
    ],
}


class BatchPredictionOut(BaseModel):
    """Results in request order."""

    model_config = ConfigDict(json_schema_extra={"examples": [BATCH_PREDICTION_EXAMPLE]})

    model_version: str
    as_of: dt.datetime
    found: int
    not_found: int
    results: list[BatchPredictionItem]


class ModelOut(BaseModel):
    """The model this worker serves."""

    version: str
    loaded_at: dt.datetime
    manifest: dict[str, object]


class SegmentMember(BaseModel):
    """One customer in a segment export."""

    customer_id: str
    clv: float
    churn_probability: float
    lifecycle_stage: LifecycleStage
    value_tier: ValueTier
    expected_value_at_risk: float


class ScoreRunOut(BaseModel):
    """The stored batch-scoring run a segment comes from."""

    id: int
    as_of: dt.datetime
    model_version: str
    customers: int
    created_at: dt.datetime


class SegmentPage(BaseModel):
    """A page of a segment, highest expected value at risk first."""

    run: ScoreRunOut
    items: list[SegmentMember]
    next_cursor: str | None
