"""HTTP endpoint of the alert feed, for consumers that poll instead of receiving webhooks."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from app.alerts.models import Alert, AlertType
from app.alerts.repository import AlertRepository
from app.alerts.schemas import AlertOut, AlertPage
from app.auth.dependencies import PredictionsReader
from app.db import SessionDep
from app.errors import FieldError, InvalidInput, problem_responses
from app.features.definitions import parse_as_of

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


def alert_out(alert: Alert) -> AlertOut:
    """The feed document (and webhook body) of a stored alert."""
    return AlertOut(
        id=alert.alert_id, type=AlertType(alert.type), timestamp=alert.occurred_at, data=alert.data
    )


def _invalid(field: str, message: str, code: str) -> InvalidInput:
    return InvalidInput(
        f"invalid field(s): {field}",
        errors=[FieldError(field=field, pointer=f"#query/{field}", message=message, code=code)],
    )


def parse_since(value: str | None) -> dt.datetime | None:
    """A `since` parameter as an aware instant, or 422 naming it."""
    if value is None:
        return None
    try:
        return parse_as_of(value)
    except (ValueError, OverflowError) as exc:
        raise _invalid("since", str(exc), "invalid_datetime") from exc


@router.get(
    "",
    response_model=AlertPage,
    responses=problem_responses(401, 403, 422),
    summary="Poll the alert feed",
)
async def get_alerts(
    _auth: PredictionsReader,
    session: SessionDep,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only alerts recorded at or after this instant (RFC 3339 with offset, "
            "or YYYY-MM-DD).",
        ),
    ] = None,
    type: Annotated[
        list[AlertType] | None, Query(description="Only these types (repeat the parameter).")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=18, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> AlertPage:
    """Alerts oldest first (the same documents the webhooks deliver). Keep the last `next_cursor` and poll with it."""
    after: int | None = None
    if cursor is not None:
        if not cursor.isdigit():
            raise _invalid("cursor", "not a cursor this API issued", "invalid_cursor")
        after = int(cursor)
    alerts = await AlertRepository(session).page(
        after, parse_since(since), [t.value for t in type or []], limit
    )
    next_cursor = str(alerts[-1].id) if alerts else cursor
    return AlertPage(items=[alert_out(a) for a in alerts], next_cursor=next_cursor)
