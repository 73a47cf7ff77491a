"""Webhook endpoints: registration (SSRF-checked), changes, secret rotation, replay."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import FieldError, InvalidInput, NotFound
from app.webhooks import ssrf
from app.webhooks.models import WebhookEndpoint
from app.webhooks.repository import EndpointRepository
from app.webhooks.schemas import (
    DeliveryCounts,
    DeliveryList,
    DeliveryOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WebhookSecret,
)
from app.webhooks.signing import new_secret


def endpoint_out(endpoint: WebhookEndpoint, counts: dict[str, int] | None = None) -> WebhookOut:
    """The API view of an endpoint (no secret)."""
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoint.events,
        description=endpoint.description,
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
        deliveries=None
        if counts is None
        else DeliveryCounts(
            pending=counts.get("pending", 0),
            delivered=counts.get("delivered", 0),
            dead=counts.get("dead", 0),
        ),
    )


def _with_secret(endpoint: WebhookEndpoint) -> WebhookSecret:
    return WebhookSecret(**endpoint_out(endpoint).model_dump(), secret=endpoint.secret)


class WebhookService:
    """Manages endpoints through the request's session; the session commits."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.settings = settings
        self.endpoints = EndpointRepository(session)

    async def _checked_url(self, url: str) -> str:
        try:
            await ssrf.resolve(url, self.settings.webhooks_allow_private)
        except ssrf.UnsafeUrl as exc:
            raise InvalidInput(
                "invalid field(s): url",
                errors=[
                    FieldError(field="url", pointer="/url", message=str(exc), code="unsafe_url")
                ],
            ) from exc
        return url

    async def _get(self, endpoint_id: int) -> WebhookEndpoint:
        endpoint = await self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound(f"no webhook endpoint with id {endpoint_id}")
        return endpoint

    async def register(self, body: WebhookIn) -> WebhookSecret:
        """A new endpoint with a fresh secret."""
        endpoint = WebhookEndpoint(
            url=await self._checked_url(body.url),
            events=None if body.events is None else sorted({e.value for e in body.events}),
            description=body.description,
            secret=new_secret(),
            enabled=True,
        )
        return _with_secret(await self.endpoints.add(endpoint))

    async def list(self) -> list[WebhookOut]:
        """Every endpoint with its delivery counts."""
        endpoints = await self.endpoints.all()
        counts = await self.endpoints.counts([e.id for e in endpoints])
        return [endpoint_out(e, counts.get(e.id, {})) for e in endpoints]

    async def one(self, endpoint_id: int) -> WebhookOut:
        """One endpoint with its delivery counts."""
        endpoint = await self._get(endpoint_id)
        counts = await self.endpoints.counts([endpoint.id])
        return endpoint_out(endpoint, counts.get(endpoint.id, {}))

    async def change(self, endpoint_id: int, patch: WebhookPatch) -> WebhookOut:
        """Apply the given changes (a new URL is checked like a new registration)."""
        endpoint = await self._get(endpoint_id)
        if patch.url is not None:
            endpoint.url = await self._checked_url(patch.url)
        if patch.events is not None:
            endpoint.events = sorted({e.value for e in patch.events})
        if patch.enabled is not None:
            endpoint.enabled = patch.enabled
        if patch.description is not None:
            endpoint.description = patch.description
        return endpoint_out(endpoint)

    async def delete(self, endpoint_id: int) -> None:
        """Remove the endpoint and its pending deliveries."""
        await self.endpoints.remove(await self._get(endpoint_id))

    async def rotate(self, endpoint_id: int) -> WebhookSecret:
        """A new secret; the old one also signs for CLV_WEBHOOKS_SECRET_GRACE_HOURS."""
        endpoint = await self._get(endpoint_id)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = dt.datetime.now(dt.UTC) + dt.timedelta(
            hours=self.settings.webhooks_secret_grace_hours
        )
        endpoint.secret = new_secret()
        return _with_secret(endpoint)

    async def replay(self, endpoint_id: int, since: dt.datetime, only_failed: bool) -> int:
        """Queue the endpoint's alerts since `since` again; returns how many."""
        return await self.endpoints.replay(await self._get(endpoint_id), since, only_failed)

    async def deliveries(self, endpoint_id: int, status: str | None, limit: int) -> DeliveryList:
        """The endpoint's latest deliveries."""
        await self._get(endpoint_id)
        rows = await self.endpoints.deliveries(endpoint_id, status, limit)
        return DeliveryList(
            items=[
                DeliveryOut(
                    alert_id=a.alert_id,
                    type=a.type,
                    status=d.status,
                    attempts=d.attempts,
                    next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                    last_status_code=d.last_status_code,
                    last_error=d.last_error,
                    delivered_at=d.delivered_at,
                )
                for d, a in rows
            ]
        )
