"""Customer payloads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$", strict=True)]
# No NUL: Postgres text cannot hold it (the insert would fail as a 500).
Channel = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00]+$", strict=True)
]

PROFILE_EXAMPLE: dict[str, Any] = {
    "signup_at": "2026-01-15T10:00:00Z",
    "country": "DE",
    "acquisition_channel": "paid_search",
    "attributes": {"newsletter": True, "segment": "b2c"},
}


class CustomerProfileIn(BaseModel):
    """Profile attributes; PUT replaces the whole profile (omitted fields become null)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [PROFILE_EXAMPLE]})

    signup_at: AwareDatetime | None = Field(default=None, description="RFC 3339 with offset.")
    country: CountryCode | None = Field(default=None, description="ISO 3166-1 alpha-2, e.g. `DE`.")
    acquisition_channel: Channel | None = Field(default=None, examples=["paid_search"])
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="Free-form JSON object (size- and depth-limited)."
    )


class CustomerSummary(BaseModel):
    """What the event history says about the customer, as of now."""

    first_event_at: dt.datetime | None
    last_event_at: dt.datetime | None
    event_count: int
    order_count: int
    first_order_at: dt.datetime | None
    last_order_at: dt.datetime | None
    gross_revenue: Decimal = Field(description="Sum of order amounts.")
    refunded: Decimal = Field(description="Sum of refund amounts.")
    net_revenue: Decimal = Field(description="gross_revenue - refunded.")
    currency: str


class CustomerOut(BaseModel):
    """A customer's profile and history summary."""

    customer_id: str
    signup_at: dt.datetime | None
    country: str | None
    acquisition_channel: str | None
    attributes: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    summary: CustomerSummary


class ErasureOut(BaseModel):
    """What an erasure removed, by table."""

    customer_id: str
    deleted: dict[str, int] = Field(examples=[{"customers": 1, "events": 42}])
