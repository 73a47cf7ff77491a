"""Event payloads: what the API accepts and returns."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from app.errors import FieldError, Problem
from app.events.models import MONETARY_TYPES, EventType
from app.features.as_of import EARLIEST_OCCURRED_AT
from app.ids import ExternalId
from app.scoring.schemas import PredictionOut

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)

ORDER_EXAMPLE: dict[str, Any] = {
    "event_id": "ord-1001",
    "customer_id": "cust-42",
    "type": "order",
    "occurred_at": "2026-11-20T14:03:00+01:00",
    "amount": "59.90",
    "currency": "USD",
    "order_id": "1001",
    "properties": {"items": 2, "coupon": "WELCOME10"},
}
VIEW_EXAMPLE: dict[str, Any] = {
    "event_id": "pv-7f3a",
    "customer_id": "cust-42",
    "type": "product_view",
    "occurred_at": "2026-11-20T13:58:12Z",
    "properties": {"sku": "SKU-123"},
}
REFUND_EXAMPLE: dict[str, Any] = {
    "event_id": "ref-1001-1",
    "customer_id": "cust-42",
    "type": "refund",
    "occurred_at": "2026-11-23T09:00:00Z",
    "amount": "19.95",
    "currency": "USD",
    "order_id": "1001",
}

#: ORDER_EXAMPLE as stored (instants in UTC, amount as a decimal string): the POST /v1/events
#: answers, checked against real ones by tests/test_openapi_examples.py.
STORED_ORDER_EXAMPLE: dict[str, Any] = {
    **ORDER_EXAMPLE,
    "occurred_at": "2026-11-20T13:03:00Z",
    "received_at": "2026-11-20T13:03:01.250417Z",
}
CREATED_EXAMPLE: dict[str, Any] = {"status": "created", "event": STORED_ORDER_EXAMPLE}
DUPLICATE_EXAMPLE: dict[str, Any] = {"status": "duplicate", "event": STORED_ORDER_EXAMPLE}

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$", strict=True)]
Amount = Annotated[
    Decimal,
    Field(
        ge=0,
        lt=Decimal(1_000_000_000),
        decimal_places=2,
        description="Decimal with at most 2 places, as a JSON string (preferred) or number.",
        examples=["59.90"],
    ),
]


def json_document_problem(value: Any, max_depth: int) -> tuple[str, str] | None:
    """(message, code) when a free-form JSON value cannot be stored as is, else None.

    Postgres text and jsonb hold no NUL character, UTF-8 has no unpaired surrogate and jsonb no
    NaN or Infinity (Python's JSON parser lets all of them through), so such values would fail
    in the database as 500s; depth is checked here too, iteratively, before anything recursive
    (serializing, measuring) could blow the stack on a deeply nested document.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth + 1 > max_depth:
                return f"nests deeper than {max_depth} levels", "too_deep"
            if isinstance(node, dict):
                if any(_unstorable_text(key) for key in node):
                    return _TEXT_PROBLEM
                stack.extend((child, depth + 1) for child in node.values())
            else:
                stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            if _unstorable_text(node):
                return _TEXT_PROBLEM
        elif isinstance(node, float) and not math.isfinite(node):
            return "holds a number that is not finite (NaN or Infinity)", "not_finite"
    return None


_TEXT_PROBLEM = (
    "holds text with a NUL character or an unpaired surrogate, which cannot be stored",
    "invalid_text",
)


def _unstorable_text(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: what properties size limits are measured on."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class EventIn(BaseModel):
    """One customer event as sent by the shop; `event_id` is the idempotency key."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [ORDER_EXAMPLE, VIEW_EXAMPLE, REFUND_EXAMPLE]},
    )

    event_id: ExternalId = Field(description="Idempotency key: 1-128 chars of `[A-Za-z0-9._:@-]`.")
    customer_id: ExternalId = Field(description="The shop's customer id.")
    type: EventType = Field(description="What happened.")
    occurred_at: AwareDatetime = Field(
        description="RFC 3339 timestamp with an explicit offset, from 1990-01-01 to a few "
        "minutes ahead of the server clock."
    )
    amount: Amount | None = Field(
        default=None,
        validate_default=True,
        description="Required for `order` (>= 0; 0 is a free order) and `refund` (> 0); "
        "absent for every other type.",
    )
    currency: Currency | None = Field(
        default=None,
        validate_default=True,
        description="ISO 4217; required with `amount`, must be the shop's currency.",
    )
    order_id: ExternalId | None = Field(
        default=None, description="The order's id; on a refund, the order it refunds."
    )
    properties: dict[str, Any] | None = Field(
        default=None, description="Free-form JSON object (size- and depth-limited)."
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _RFC3339.match(value):
            raise ValueError(
                "must be an RFC 3339 timestamp with an explicit offset, "
                "e.g. 2026-11-20T14:03:00Z or 2026-11-20T14:03:00+01:00"
            )
        return value

    @field_validator("occurred_at")
    @classmethod
    def _not_too_early(cls, value: dt.datetime) -> dt.datetime:
        if value < EARLIEST_OCCURRED_AT:
            raise ValueError("must not be before 1990-01-01T00:00:00Z")
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a decimal number or string")
        return value

    @field_validator("amount")
    @classmethod
    def _amount_matches_type(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("type")
        if kind is None:  # the type itself was invalid and is reported on its own
            return value
        if kind in MONETARY_TYPES:
            if value is None:
                raise ValueError(f"required for type '{kind.value}'")
            if kind is EventType.refund and value == 0:
                raise ValueError("a refund must be greater than 0")
        elif value is not None:
            raise ValueError(f"not allowed for type '{kind.value}'")
        return value

    @field_validator("currency")
    @classmethod
    def _currency_matches_type(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind is None:
            return value
        if kind in MONETARY_TYPES and value is None:
            raise ValueError(f"required for type '{kind.value}'")
        if kind not in MONETARY_TYPES and value is not None:
            raise ValueError(f"not allowed for type '{kind.value}'")
        return value

    def fingerprint(self) -> tuple[Any, ...]:
        """What makes two events with the same `event_id` identical (instants compared in UTC)."""
        return (
            self.customer_id,
            self.type.value,
            self.occurred_at.astimezone(dt.UTC),
            None if self.amount is None else self.amount.normalize(),
            self.currency,
            self.order_id,
            canonical_json(self.properties) if self.properties is not None else None,
        )


class EventOut(BaseModel):
    """A stored event."""

    event_id: str
    customer_id: str
    type: EventType
    occurred_at: dt.datetime
    # Defaults make these optional in the response schema: POST /v1/events omits nulls.
    amount: Decimal | None = Field(default=None, description='Decimal string, e.g. "59.90".')
    currency: str | None = None
    order_id: str | None = None
    properties: dict[str, Any] | None = None
    received_at: dt.datetime


class EventAck(BaseModel):
    """Result of posting one event."""

    status: Literal["created", "duplicate"] = Field(
        description="`created` the first time, `duplicate` when this exact event was stored before."
    )
    event: EventOut
    prediction: PredictionOut | None = Field(
        default=None,
        description="With `?score=true`: the customer's prediction including this event.",
    )
    prediction_error: str | None = Field(
        default=None,
        description="With `?score=true`: why no prediction came back (the event is stored).",
    )


class EventBatchIn(BaseModel):
    """Up to `CLV_MAX_BATCH_EVENTS` events; each is validated and stored on its own merits."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"events": [ORDER_EXAMPLE, VIEW_EXAMPLE]}]},
    )

    # Items stay raw here so one bad item rejects only itself; each is validated as EventIn.
    events: list[Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/EventIn"})]] = Field(
        min_length=1
    )


class ItemError(BaseModel):
    """Why one batch item was rejected."""

    type: str
    title: str
    detail: str
    errors: list[FieldError] | None = None


class BatchItemResult(BaseModel):
    """Outcome of one batch item, by its position in the request."""

    index: int
    event_id: str | None = Field(
        default=None, description="Absent when the item carried no string `event_id`."
    )
    status: Literal["created", "duplicate", "rejected"]
    error: ItemError | None = None


class EventBatchResult(BaseModel):
    """Per-item outcomes plus totals."""

    created: int
    duplicates: int
    rejected: int
    results: list[BatchItemResult]
    predictions: list[PredictionOut] | None = Field(
        default=None, description="With `?score=true`: one per customer with a stored item."
    )
    prediction_error: str | None = None


class EventPage(BaseModel):
    """A page of a customer's events, newest first."""

    items: list[EventOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


__all__ = [
    "EARLIEST_OCCURRED_AT",
    "EventAck",
    "EventBatchIn",
    "EventBatchResult",
    "EventIn",
    "EventOut",
    "Problem",
]
