"""API documents of the alert feed (the same documents are the webhook bodies)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from app.alerts.models import AlertType

ALERT_EXAMPLE: dict[str, Any] = {
    "id": "msg_6f1c0a3e9b2d4c58a1e7f0b3c2d4e5f6",
    "type": "customer.at_risk",
    "timestamp": "2026-11-30T03:00:12.345678Z",
    "data": {
        "customer_id": "cust-42",
        "from": "active",
        "to": "at_risk",
        "model_version": "20261124T101500Z-3f2a",
        "expected_value_at_risk": 91.4,
        "before": {
            "clv": 180.2,
            "churn_probability": 0.31,
            "lifecycle_stage": "active",
            "value_tier": "high",
            "expected_value_at_risk": 55.86,
            "model_version": "20261124T101500Z-3f2a",
            "as_of": "2026-11-29T03:00:00Z",
        },
        "after": {
            "clv": 172.9,
            "churn_probability": 0.53,
            "lifecycle_stage": "at_risk",
            "value_tier": "high",
            "expected_value_at_risk": 91.4,
            "model_version": "20261124T101500Z-3f2a",
            "as_of": "2026-11-30T03:00:00Z",
        },
        "source": "rescore",
    },
}


class AlertOut(BaseModel):
    """One alert: its id is the `webhook-id` of every delivery of it."""

    model_config = {"json_schema_extra": {"examples": [ALERT_EXAMPLE]}}

    id: str = Field(description="Unique id; the `webhook-id` header of its deliveries.")
    type: AlertType
    timestamp: dt.datetime = Field(description="When the change was recorded.")
    data: dict[str, Any] = Field(
        description="customer_id, from/to, model_version, expected_value_at_risk, the scores "
        "before and after, and the source (event, batch, score_run, rescore)."
    )


class AlertPage(BaseModel):
    """A page of the feed, oldest first; pass `next_cursor` back as `cursor` for the next."""

    items: list[AlertOut]
    next_cursor: str | None = Field(
        description="Cursor of the next page; also the place to resume polling from when the "
        "page was the last one (null only when the page is empty)."
    )
