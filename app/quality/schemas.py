"""Data-quality report payloads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field


class QualityExample(BaseModel):
    """One offending row (an event, an order or a customer), enough to look it up."""

    customer_id: str | None = Field(description="External id; null for an event without customer.")
    event_id: str | None = None
    order_id: str | None = None
    occurred_at: dt.datetime | None = Field(
        default=None, description="The event's instant (for a customer: when it was created)."
    )
    amount: Decimal | None = None
    related_event_id: str | None = Field(
        default=None, description="The other event involved (first copy, next event...)."
    )
    related_amount: Decimal | None = Field(
        default=None, description="The other amount involved (the order a refund exceeds)."
    )


class QualityCheck(BaseModel):
    """One data-quality rule: how many rows break it, out of how many, and a few examples."""

    name: str = Field(examples=["orphan_refunds"])
    description: str
    severity: Literal["warning", "info"] = Field(
        description="`warning`: likely bad data that skews features; `info`: worth knowing."
    )
    count: int = Field(description="Rows (events, orders or customers) that break the rule.")
    population: int = Field(description="Rows the rule looks at (the share's denominator).")
    population_name: str = Field(examples=["refunds"])
    share: float = Field(description="count / population (0 when the population is empty).")
    amount: Decimal | None = Field(
        default=None, description="Money involved, in the service's currency (where it applies)."
    )
    large: bool = Field(description="A warning whose share is above `CLV_QUALITY_WARN_SHARE`.")
    examples: list[QualityExample]


class DataQualityReport(BaseModel):
    """What the stored events look like as of an instant: counts, shares and examples."""

    as_of: dt.datetime
    currency: str
    events: int = Field(description="Events with occurred_at <= as_of.")
    customers: int
    late_hours: float
    early_gap_days: float
    future_skew_seconds: int
    warn_share: float
    checks: list[QualityCheck]
