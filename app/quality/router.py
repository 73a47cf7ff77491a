"""HTTP endpoint for the data-quality report (admin scope)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from app.auth.dependencies import Admin
from app.config import SettingsDep
from app.db import SessionDep
from app.errors import problem_responses
from app.features.as_of import AsOfQuery, resolve_as_of
from app.quality.schemas import DataQualityReport
from app.quality.service import build_report

router = APIRouter(prefix="/v1/data-quality", tags=["quality"])


@router.get(
    "",
    response_model=DataQualityReport,
    responses=problem_responses(401, 403, 422),
    summary="Report the quality of the stored events",
)
async def get_data_quality(
    _auth: Admin, session: SessionDep, settings: SettingsDep, as_of: AsOfQuery = None
) -> DataQualityReport:
    """Counts, shares and examples of orphan refunds, over-refunded orders, zero-amount and duplicate orders, far-early, future, late and customer-less events, money events without order_id and customers without events."""
    moment = resolve_as_of(as_of, max_skew=settings.max_future_skew)

    def run(sync: Session) -> DataQualityReport:
        return build_report(sync.connection(), settings, moment)

    return await session.run_sync(run)
