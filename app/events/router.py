"""HTTP endpoints for event ingestion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from app.config import SettingsDep
from app.db import SessionDep
from app.errors import problem_responses
from app.events.schemas import (
    ORDER_EXAMPLE,
    REFUND_EXAMPLE,
    VIEW_EXAMPLE,
    EventAck,
    EventBatchIn,
    EventBatchResult,
    EventIn,
)
from app.events.service import EventService, to_out

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EventAck,
    responses={
        200: {"model": EventAck, "description": "This exact event was stored before (duplicate)."},
        **problem_responses(409, 413, 422),
    },
    summary="Ingest one event",
)
async def post_event(
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
) -> EventAck:
    """Store one event. Idempotent on `event_id`: 201 first time, 200 for the same event again, 409 when the id is reused with different content."""
    stored = await EventService(session, settings).ingest_one(event)
    if stored.status == "duplicate":
        response.status_code = status.HTTP_200_OK
    return EventAck(status=stored.status, event=to_out(stored.event))


@router.post(
    "/batch",
    response_model=EventBatchResult,
    responses=problem_responses(413, 422),
    summary="Ingest a batch of events",
)
async def post_event_batch(
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
) -> EventBatchResult:
    """Store up to `CLV_MAX_BATCH_EVENTS` events in one transaction; each item is created, duplicate or rejected on its own."""
    return await EventService(session, settings).ingest_batch(batch.events)
