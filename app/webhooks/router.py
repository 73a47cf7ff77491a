"""HTTP endpoints to manage webhook receivers (scope `webhooks:admin`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status

from app.alerts.router import parse_since
from app.auth.dependencies import WebhooksAdmin
from app.config import SettingsDep
from app.db import SessionDep
from app.errors import problem_responses
from app.webhooks.schemas import (
    DeliveryList,
    ReplayOut,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
    WebhookSecret,
)
from app.webhooks.service import WebhookService

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The endpoint's id.")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookSecret,
    responses=problem_responses(400, 401, 403, 413, 422),
    summary="Register a webhook endpoint",
)
async def post_webhook(
    _auth: WebhooksAdmin, session: SessionDep, settings: SettingsDep, body: WebhookIn
) -> WebhookSecret:
    """Register a receiver for alerts (all types unless `events` says which). The answer carries the signing `secret`, shown only this once. URLs resolving to loopback, private or link-local addresses are refused unless CLV_WEBHOOKS_ALLOW_PRIVATE=true."""
    return await WebhookService(session, settings).register(body)


@router.get(
    "", response_model=WebhookList, responses=problem_responses(401, 403), summary="List endpoints"
)
async def list_webhooks(
    _auth: WebhooksAdmin, session: SessionDep, settings: SettingsDep
) -> WebhookList:
    """Every registered endpoint with its deliveries by state (secrets are never listed)."""
    return WebhookList(items=await WebhookService(session, settings).list())


@router.get(
    "/{webhook_id}",
    response_model=WebhookOut,
    responses=problem_responses(401, 403, 404, 422),
    summary="Show an endpoint",
)
async def get_webhook(
    _auth: WebhooksAdmin, webhook_id: WebhookId, session: SessionDep, settings: SettingsDep
) -> WebhookOut:
    """One endpoint with its deliveries by state."""
    return await WebhookService(session, settings).one(webhook_id)


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
    summary="Change, disable or enable an endpoint",
)
async def patch_webhook(
    _auth: WebhooksAdmin,
    webhook_id: WebhookId,
    session: SessionDep,
    settings: SettingsDep,
    body: WebhookPatch,
) -> WebhookOut:
    """Change the URL, the alert types, or `enabled` (false pauses deliveries; they resume when enabled again)."""
    return await WebhookService(session, settings).change(webhook_id, body)


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 422),
    summary="Delete an endpoint",
)
async def delete_webhook(
    _auth: WebhooksAdmin, webhook_id: WebhookId, session: SessionDep, settings: SettingsDep
) -> Response:
    """Delete the endpoint and its pending deliveries."""
    await WebhookService(session, settings).delete(webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookSecret,
    responses=problem_responses(401, 403, 404, 422),
    summary="Rotate the signing secret",
)
async def rotate_secret(
    _auth: WebhooksAdmin, webhook_id: WebhookId, session: SessionDep, settings: SettingsDep
) -> WebhookSecret:
    """A new secret, shown once. For CLV_WEBHOOKS_SECRET_GRACE_HOURS deliveries carry two signatures, by the new and the old secret."""
    return await WebhookService(session, settings).rotate(webhook_id)


@router.post(
    "/{webhook_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReplayOut,
    responses=problem_responses(401, 403, 404, 422),
    summary="Replay alerts to an endpoint",
)
async def replay(
    _auth: WebhooksAdmin,
    webhook_id: WebhookId,
    session: SessionDep,
    settings: SettingsDep,
    since: Annotated[
        str,
        Query(max_length=64, description="Alerts recorded at or after this instant (RFC 3339)."),
    ],
    only_failed: Annotated[
        bool, Query(description="Only dead-lettered deliveries, not delivered ones.")
    ] = False,
) -> ReplayOut:
    """Queue the endpoint's alerts since `since` again, with fresh attempts; each keeps its `webhook-id`, so receivers can drop the ones they already have."""
    moment = parse_since(since)
    assert moment is not None  # `since` is required
    scheduled = await WebhookService(session, settings).replay(webhook_id, moment, only_failed)
    return ReplayOut(scheduled=scheduled)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses=problem_responses(401, 403, 404, 422),
    summary="Inspect deliveries (dead letters included)",
)
async def list_deliveries(
    _auth: WebhooksAdmin,
    webhook_id: WebhookId,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    """The endpoint's latest deliveries, newest first; `status=dead` lists the dead letters."""
    return await WebhookService(session, settings).deliveries(webhook_id, status, limit)
