"""SQL for webhook endpoints and deliveries: the admin API's and the deliverer's queries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.alerts.models import Alert
from app.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint


def _insert(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(WebhookDelivery)


class EndpointRepository:
    """Endpoints through the request's session; never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        """Insert and return the endpoint with its id and defaults."""
        self.session.add(endpoint)
        await self.session.flush()
        await self.session.refresh(endpoint)
        return endpoint

    async def get(self, endpoint_id: int) -> WebhookEndpoint | None:
        """One endpoint, row-locked until commit."""
        query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def all(self) -> list[WebhookEndpoint]:
        """Every endpoint, oldest first."""
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
        return list((await self.session.execute(query)).scalars())

    async def remove(self, endpoint: WebhookEndpoint) -> None:
        """Delete the endpoint and (cascade) its deliveries."""
        await self.session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id))

    async def counts(self, endpoint_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Deliveries per endpoint and status."""
        query = (
            select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count())
            .where(WebhookDelivery.endpoint_id.in_(list(endpoint_ids)))
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status)
        )
        out: dict[int, dict[str, int]] = {}
        for endpoint_id, status, n in await self.session.execute(query):
            out.setdefault(endpoint_id, {})[status] = int(n)
        return out

    async def replay(self, endpoint: WebhookEndpoint, since: dt.datetime, only_failed: bool) -> int:
        """Queue the endpoint's alerts since an instant again, attempts reset; returns how many."""
        dialect = self.session.get_bind().dialect.name
        now = dt.datetime.now(dt.UTC)
        if only_failed:
            result = await self.session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.endpoint_id == endpoint.id,
                    WebhookDelivery.status == DeliveryStatus.dead,
                    WebhookDelivery.alert_id.in_(
                        select(Alert.id).where(Alert.occurred_at >= since)
                    ),
                )
                .values(status=DeliveryStatus.pending, attempts=0, next_attempt_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
        alerts = select(
            literal(endpoint.id, WebhookDelivery.endpoint_id.type),
            Alert.id,
            literal(DeliveryStatus.pending, WebhookDelivery.status.type),
            literal(0, WebhookDelivery.attempts.type),
            literal(now, WebhookDelivery.next_attempt_at.type),
        ).where(Alert.occurred_at >= since)
        if endpoint.events is not None:
            alerts = alerts.where(Alert.type.in_(endpoint.events))
        statement = _insert(dialect).from_select(
            ["endpoint_id", "alert_id", "status", "attempts", "next_attempt_at"], alerts
        )
        statement = statement.on_conflict_do_update(
            index_elements=["endpoint_id", "alert_id"],
            set_={
                "status": DeliveryStatus.pending,
                "attempts": 0,
                "next_attempt_at": now,
                "delivered_at": None,
            },
        )
        result = await self.session.execute(statement)
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def deliveries(
        self, endpoint_id: int, status: str | None, limit: int
    ) -> list[tuple[WebhookDelivery, Alert]]:
        """The endpoint's latest deliveries, with their alerts."""
        query = (
            select(WebhookDelivery, Alert)
            .join(Alert, Alert.id == WebhookDelivery.alert_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        return [(d, a) for d, a in await self.session.execute(query)]


# The deliverer's queries, on an AsyncConnection in a short transaction each.


async def fan_out(connection: AsyncConnection, batch: int) -> int:
    """Turn up to `batch` new alerts into one delivery per subscribed, enabled endpoint."""
    dialect = connection.dialect.name
    query = select(Alert.id, Alert.type).where(Alert.dispatched_at.is_(None)).order_by(Alert.id)
    query = query.limit(batch).with_for_update(skip_locked=True)
    alerts = (await connection.execute(query)).all()
    if not alerts:
        return 0
    endpoints = (
        await connection.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(WebhookEndpoint.enabled)
        )
    ).all()
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "endpoint_id": endpoint_id,
            "alert_id": alert_id,
            "status": DeliveryStatus.pending,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for alert_id, kind in alerts
        for endpoint_id, events in endpoints
        if events is None or kind in events
    ]
    if rows:
        await connection.execute(
            _insert(dialect).on_conflict_do_nothing(index_elements=["endpoint_id", "alert_id"]),
            rows,
        )
    await connection.execute(
        update(Alert).where(Alert.id.in_([a for a, _ in alerts])).values(dispatched_at=now)
    )
    return len(alerts)


async def claim(connection: AsyncConnection, limit: int, lease: dt.timedelta) -> list[Any]:
    """Lease up to `limit` due deliveries of enabled endpoints (one attempt each) and return
    what sending them needs. A deliverer that dies mid-send leaves the lease to expire, and the
    delivery is sent again: at least once."""
    now = dt.datetime.now(dt.UTC)
    due = (
        select(WebhookDelivery.id)
        .join(
            WebhookEndpoint,
            and_(WebhookEndpoint.id == WebhookDelivery.endpoint_id, WebhookEndpoint.enabled),
        )
        .where(
            WebhookDelivery.status == DeliveryStatus.pending,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    ids = [i for (i,) in await connection.execute(due)]
    if not ids:
        return []
    await connection.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(next_attempt_at=now + lease, attempts=WebhookDelivery.attempts + 1)
    )
    query = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.attempts,
            WebhookEndpoint.id,
            WebhookEndpoint.url,
            WebhookEndpoint.secret,
            WebhookEndpoint.previous_secret,
            WebhookEndpoint.previous_secret_until,
            Alert.alert_id,
            Alert.type,
            Alert.occurred_at,
            Alert.data,
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(Alert, Alert.id == WebhookDelivery.alert_id)
        .where(WebhookDelivery.id.in_(ids))
    )
    return list((await connection.execute(query)).all())


async def record_outcomes(connection: AsyncConnection, outcomes: list[dict[str, Any]]) -> None:
    """Store attempts' outcomes in one statement (executemany): each row has `delivery_id`,
    `status` (delivered, dead, or pending to retry at `next_attempt_at`), `delivered_at`,
    `last_status_code` and `last_error`."""
    if not outcomes:
        return
    statement = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == bindparam("delivery_id"),
            WebhookDelivery.status == DeliveryStatus.pending,
        )
        .values(
            status=bindparam("new_status"),
            next_attempt_at=bindparam("retry_at"),
            delivered_at=bindparam("done_at"),
            last_status_code=bindparam("status_code"),
            last_error=bindparam("error"),
        )
    )
    await connection.execute(statement, outcomes)


async def prune(connection: AsyncConnection, before: dt.datetime, batch: int) -> int:
    """Delete up to `batch` fanned-out alerts recorded before `before` (their deliveries go
    with them); returns how many."""
    old = (
        select(Alert.id)
        .where(Alert.occurred_at < before, Alert.dispatched_at.is_not(None))
        .limit(batch)
    )
    result = await connection.execute(delete(Alert).where(Alert.id.in_(old)))
    return int(result.rowcount)
