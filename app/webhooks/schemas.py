"""API documents of webhook endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from app.alerts.models import AlertType


class WebhookIn(BaseModel):
    """A receiver to register."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"url": "https://crm.example.com/hooks/clv", "events": ["customer.at_risk"]}
            ]
        },
    )

    url: str = Field(max_length=2048, description="http(s) URL that receives POSTed alerts.")
    events: list[AlertType] | None = Field(
        default=None, min_length=1, description="Alert types to receive; omitted: all."
    )
    description: str | None = Field(default=None, max_length=256)


class WebhookPatch(BaseModel):
    """Changes to an endpoint; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    events: list[AlertType] | None = Field(default=None, min_length=1)
    enabled: bool | None = Field(default=None, description="false pauses deliveries.")
    description: str | None = Field(default=None, max_length=256)


class DeliveryCounts(BaseModel):
    """Deliveries of an endpoint by state."""

    pending: int
    delivered: int
    dead: int


class WebhookOut(BaseModel):
    """A registered endpoint (its secret is shown only at creation and rotation)."""

    id: int
    url: str
    events: list[AlertType] | None
    description: str | None
    enabled: bool
    created_at: dt.datetime
    deliveries: DeliveryCounts | None = None


class WebhookSecret(WebhookOut):
    """An endpoint with its signing secret: store it now, it is not shown again."""

    secret: str = Field(description="`whsec_<base64 key>`: verify `webhook-signature` with it.")


class WebhookList(BaseModel):
    """All registered endpoints."""

    items: list[WebhookOut]


class ReplayOut(BaseModel):
    """How many alerts were queued again for the endpoint."""

    scheduled: int


class DeliveryOut(BaseModel):
    """One alert's delivery to an endpoint."""

    alert_id: str = Field(description="The alert's id, sent as `webhook-id`.")
    type: AlertType
    status: str = Field(description="pending, delivered or dead (dead-lettered).")
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: dt.datetime | None


class DeliveryList(BaseModel):
    """Deliveries of an endpoint, newest first."""

    items: list[DeliveryOut]
