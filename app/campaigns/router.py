"""HTTP endpoint of campaign planning."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.dependencies import PredictionsReader
from app.campaigns.schemas import CampaignPlanIn, CampaignPlanOut
from app.campaigns.service import plan_campaign
from app.config import SettingsDep
from app.db import SessionDep
from app.errors import problem_responses

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])


@router.post(
    "/plan",
    response_model=CampaignPlanOut,
    responses=problem_responses(400, 401, 403, 413, 422),
    summary="Plan a retention campaign for a budget",
)
async def post_plan(
    _auth: PredictionsReader, session: SessionDep, settings: SettingsDep, body: CampaignPlanIn
) -> CampaignPlanOut:
    """Customers to contact, best first by expected net gain (churn probability x save rate x CLV - cost), from each customer's latest stored scores; stops at the budget or where the gain is no longer positive. Expected value under your save rate, not measured uplift."""
    return await plan_campaign(session, body, settings.currency)
