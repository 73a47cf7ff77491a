"""HTTP endpoints for event ingestion."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response, status

from app.alerts.service import record_predictions
from app.auth.dependencies import EventsWriter, require_scope
from app.auth.keys import Scope
from app.config import SettingsDep
from app.content import JsonBody
from app.db import SessionDep
from app.errors import problem_responses
from app.events.schemas import (
    CREATED_EXAMPLE,
    DUPLICATE_EXAMPLE,
    ORDER_EXAMPLE,
    REFUND_EXAMPLE,
    VIEW_EXAMPLE,
    EventAck,
    EventBatchIn,
    EventBatchResult,
    EventIn,
)
from app.events.service import EventService, to_out
from app.scoring.registry import ModelRegistry, ModelUnavailable
from app.scoring.service import PredictionService

router = APIRouter(prefix="/v1/events", tags=["events"])

ScoreQuery = Annotated[
    bool,
    Query(description="Also answer with the customer's fresh prediction (this event included)."),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EventAck,
    response_model_exclude_none=True,
    responses={
        201: {
            "description": "Created: the event is stored (with `score=true`, the prediction too).",
            "content": {"application/json": {"example": CREATED_EXAMPLE}},
        },
        200: {
            "model": EventAck,
            "description": "Duplicate: this exact event was stored before; nothing changed.",
            "content": {"application/json": {"example": DUPLICATE_EXAMPLE}},
        },
        **problem_responses(
            400, 401, 403, 409, 413, 415, 422, examples={422: ("invalid-amount", "malformed-json")}
        ),
    },
    summary="Ingest one event",
)
async def post_event(
    principal: EventsWriter,
    _json: JsonBody,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    event: Annotated[
        EventIn,
        Body(
            openapi_examples={
                "order": {"summary": "An order", "value": ORDER_EXAMPLE},
                "product_view": {"summary": "A product view", "value": VIEW_EXAMPLE},
                "refund": {"summary": "A partial refund of order 1001", "value": REFUND_EXAMPLE},
            }
        ),
    ],
    score: ScoreQuery = False,
) -> EventAck:
    """Store one event. Idempotent on `event_id`: 201 first time, 200 for the same event again, 409 when the id is reused with different content. With `score=true` the answer carries the customer's prediction."""
    if score:
        require_scope(principal, Scope.predictions_read)
    stored = await EventService(session, settings).ingest_one(event)
    if stored.status == "duplicate":
        response.status_code = status.HTTP_200_OK
    ack = EventAck(status=stored.status, event=to_out(stored.event))
    if score:
        registry: ModelRegistry = request.app.state.registry
        try:
            # Same transaction: the prediction sees the event just written.
            service = PredictionService(session, settings, registry.active)
            # An event may be stamped a little ahead of our clock; score as of it then.
            as_of = max(dt.datetime.now(dt.UTC), event.occurred_at.astimezone(dt.UTC))
            ack.prediction = await service.one(event.customer_id, as_of)
            # The new state and its alerts commit with the event, or not at all (outbox).
            await record_predictions(session, settings, [ack.prediction], "event")
        except ModelUnavailable as exc:
            ack.prediction_error = exc.detail
    return ack


@router.post(
    "/batch",
    response_model=EventBatchResult,
    response_model_exclude_none=True,
    responses=problem_responses(
        400, 401, 403, 413, 415, 422, examples={422: ("batch-not-an-object", "malformed-json")}
    ),
    summary="Ingest a batch of events",
)
async def post_event_batch(
    principal: EventsWriter,
    _json: JsonBody,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    batch: Annotated[
        EventBatchIn,
        Body(
            openapi_examples={
                "mixed": {
                    "summary": "An order and a product view",
                    "value": {"events": [ORDER_EXAMPLE, VIEW_EXAMPLE]},
                },
                "one_bad_item": {
                    "summary": "The second item is rejected, the first is stored",
                    "value": {"events": [ORDER_EXAMPLE, {**VIEW_EXAMPLE, "type": "click"}]},
                },
            }
        ),
    ],
    score: ScoreQuery = False,
) -> EventBatchResult:
    """Store up to `CLV_MAX_BATCH_EVENTS` events in one transaction; each item is created, duplicate or rejected on its own. With `score=true`, predictions for the customers of the stored items."""
    if score:
        require_scope(principal, Scope.predictions_read)
    outcome = await EventService(session, settings).ingest_batch_events(batch.events)
    result = outcome.result
    if score:
        registry: ModelRegistry = request.app.state.registry
        # The validated events, never the raw items: the validator accepts spellings
        # (a lowercase `z`, 9 fraction digits) that datetime.fromisoformat refuses.
        stored = outcome.accepted
        customers = list(dict.fromkeys(item.customer_id for item in stored))
        # As of the latest stored event when it is ahead of our clock (within the allowed skew).
        as_of = max(
            [dt.datetime.now(dt.UTC)] + [item.occurred_at.astimezone(dt.UTC) for item in stored]
        )
        try:
            service = PredictionService(session, settings, registry.active)
            scored = await service.many(customers, as_of) if customers else None
            result.predictions = (
                [r.prediction for r in scored.results if r.prediction] if scored else []
            )
            await record_predictions(session, settings, result.predictions, "batch")
        except ModelUnavailable as exc:
            result.prediction_error = exc.detail
    return result
