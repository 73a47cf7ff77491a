"""API documents of campaign planning."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.scoring.lifecycle import LifecycleStage, ValueTier

Rate = Annotated[float, Field(ge=0, le=1)]


class CampaignPlanIn(BaseModel):
    """A retention budget and what a contact costs and is expected to save."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "budget": 500.0,
                    "cost_per_contact": 2.5,
                    "save_rate": 0.1,
                    "save_rate_by_stage": {"at_risk": 0.2},
                    "stages": ["at_risk", "active"],
                }
            ]
        },
    )

    budget: float = Field(
        ge=0, le=1e12, description="Money to spend on contacts, in the service currency."
    )
    cost_per_contact: float = Field(ge=0.01, le=1e9, description="What one contact costs.")
    save_rate: Rate | None = Field(
        default=None,
        description="Share of contacted would-be churners kept by the contact (all customers).",
    )
    save_rate_by_stage: dict[LifecycleStage, Rate] | None = Field(
        default=None, description="Save rate per lifecycle stage; wins over the others."
    )
    save_rate_by_tier: dict[ValueTier, Rate] | None = Field(
        default=None, description="Save rate per value tier; wins over `save_rate`."
    )
    stages: list[LifecycleStage] | None = Field(default=None, description="Only these stages.")
    tiers: list[ValueTier] | None = Field(default=None, description="Only these value tiers.")
    max_contacts: int | None = Field(
        default=None, ge=1, le=100_000, description="At most this many contacts."
    )


class PlannedContact(BaseModel):
    """One customer to contact, in rank order."""

    rank: int
    customer_id: str
    clv: float
    churn_probability: float
    lifecycle_stage: LifecycleStage
    value_tier: ValueTier
    save_rate: float
    expected_retained_revenue: float = Field(description="churn probability x save rate x CLV.")
    expected_net_gain: float = Field(description="Expected retained revenue minus the cost.")
    cumulative_spend: float


class CampaignTotals(BaseModel):
    """What the plan spends and is expected to keep."""

    contacts: int
    spend: float
    expected_retained_revenue: float
    expected_net_gain: float
    roi: float | None = Field(description="Expected net gain / spend (null when nothing is spent).")
    stopped_by: str = Field(
        description="`budget`, `gain` (the next contact would lose money), `max_contacts`, or "
        "`customers` (nobody else matches)."
    )


class CampaignPlanOut(BaseModel):
    """Customers ranked by expected net gain, cut at the budget or where the gain turns negative.

    Expected value, not measured uplift: see docs/alerts.md."""

    currency: str
    totals: CampaignTotals
    contacts: list[PlannedContact]
