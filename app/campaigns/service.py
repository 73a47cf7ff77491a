"""Campaign planning: who to contact for a retention budget, by expected net gain.

gain = churn probability x save rate x CLV - cost per contact. Customers are taken best first
until the budget is spent or the next one's gain is not positive. This ranks by expected value
under an assumed save rate; it does not measure uplift (see docs/alerts.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns.repository import ranked_query
from app.campaigns.schemas import CampaignPlanIn, CampaignPlanOut, CampaignTotals, PlannedContact
from app.errors import FieldError, InvalidInput

#: The API answers with at most this many contacts (`clv plan` writes any number to CSV).
API_MAX_CONTACTS = 100_000


def _check(plan: CampaignPlanIn) -> None:
    if plan.save_rate is None and not plan.save_rate_by_stage and not plan.save_rate_by_tier:
        raise InvalidInput(
            "invalid field(s): save_rate",
            errors=[
                FieldError(
                    field="save_rate",
                    pointer="/save_rate",
                    message="give save_rate, save_rate_by_stage or save_rate_by_tier",
                    code="missing",
                )
            ],
        )


def contact_limit(plan: CampaignPlanIn, hard_cap: int | None) -> tuple[int, str]:
    """How many contacts the budget (or max_contacts, or the cap) allows, and which one binds."""
    # A hair of tolerance: 10.00 / 2.50 must give 4 contacts, not 3.999...
    by_budget = math.floor(plan.budget / plan.cost_per_contact + 1e-9)
    limits = [(by_budget, "budget")]
    if plan.max_contacts is not None:
        limits.append((plan.max_contacts, "max_contacts"))
    if hard_cap is not None:
        limits.append((hard_cap, "max_contacts"))
    return min(limits)


def ranked(plan: CampaignPlanIn, limit: int) -> Any:
    """The ranking query for a plan."""
    return ranked_query(
        plan.cost_per_contact,
        plan.save_rate,
        {str(k): v for k, v in (plan.save_rate_by_stage or {}).items()},
        {str(k): v for k, v in (plan.save_rate_by_tier or {}).items()},
        list(plan.stages) if plan.stages else None,
        list(plan.tiers) if plan.tiers else None,
        limit,
    )


def build_plan(
    rows: Iterable[Sequence[Any]], plan: CampaignPlanIn, limit: int, binding: str, currency: str
) -> CampaignPlanOut:
    """Walk the ranked rows: stop at the limit or at the first non-positive gain; total up."""
    contacts: list[PlannedContact] = []
    stopped_by = "customers"
    retained = 0.0
    for row in rows:
        customer_id, clv, probability, stage, tier, rate, gain = row
        if gain <= 0:
            stopped_by = "gain"
            break
        if len(contacts) == limit:
            stopped_by = binding
            break
        value = probability * rate * clv
        retained += value
        contacts.append(
            PlannedContact(
                rank=len(contacts) + 1,
                customer_id=customer_id,
                clv=clv,
                churn_probability=probability,
                lifecycle_stage=stage,
                value_tier=tier,
                save_rate=rate,
                expected_retained_revenue=round(value, 2),
                expected_net_gain=round(gain, 2),
                cumulative_spend=round((len(contacts) + 1) * plan.cost_per_contact, 2),
            )
        )
    spend = len(contacts) * plan.cost_per_contact
    net = retained - spend
    return CampaignPlanOut(
        currency=currency,
        totals=CampaignTotals(
            contacts=len(contacts),
            spend=round(spend, 2),
            expected_retained_revenue=round(retained, 2),
            expected_net_gain=round(net, 2),
            roi=round(net / spend, 4) if spend else None,
            stopped_by=stopped_by,
        ),
        contacts=contacts,
    )


async def plan_campaign(
    session: AsyncSession, plan: CampaignPlanIn, currency: str
) -> CampaignPlanOut:
    """The plan over every customer's latest stored scores (API)."""
    _check(plan)
    limit, binding = contact_limit(plan, API_MAX_CONTACTS)
    rows = (await session.execute(ranked(plan, limit))).all()
    return build_plan(rows, plan, limit, binding, currency)


def plan_campaign_sync(
    connection: Connection, plan: CampaignPlanIn, currency: str
) -> CampaignPlanOut:
    """The same for `clv plan`."""
    _check(plan)
    limit, binding = contact_limit(plan, None)
    rows = connection.execute(ranked(plan, limit)).all()
    return build_plan(rows, plan, limit, binding, currency)
