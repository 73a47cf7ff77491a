"""SQL of campaign planning: stored customer states ranked by expected net gain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Select, case, literal, select

from app.alerts.models import CustomerState
from app.customers.models import Customer


def ranked_query(
    cost: float,
    default_rate: float | None,
    by_stage: dict[str, float],
    by_tier: dict[str, float],
    stages: list[str] | None,
    tiers: list[str] | None,
    limit: int,
) -> Select[Any]:
    """Customers whose contact has a positive expected net gain, best first, at most `limit`
    (+1, so the caller sees whether the budget or the gain stopped the list)."""
    s = CustomerState
    fallback: Any = literal(default_rate or 0.0, Float)
    if by_tier:
        fallback = case(
            *((s.value_tier == t, literal(r, Float)) for t, r in by_tier.items()), else_=fallback
        )
    rate: Any = fallback
    if by_stage:
        rate = case(
            *((s.lifecycle_stage == st, literal(r, Float)) for st, r in by_stage.items()),
            else_=fallback,
        )
    gain = s.churn_probability * rate * s.clv - literal(cost, Float)
    query = (
        select(
            Customer.external_id,
            s.clv,
            s.churn_probability,
            s.lifecycle_stage,
            s.value_tier,
            rate.label("save_rate"),
            gain.label("gain"),
        )
        .join(Customer, Customer.id == s.customer_id)
        .order_by(gain.desc(), Customer.id)
        .limit(limit + 1)
    )
    if stages:
        query = query.where(s.lifecycle_stage.in_(stages))
    if tiers:
        query = query.where(s.value_tier.in_(tiers))
    return query
