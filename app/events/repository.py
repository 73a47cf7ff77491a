"""SQL for events and the customer rows they hang off."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Customer
from app.events.models import Event


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class EventRepository:
    """Reads and writes events; never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ensure_customers(self, external_ids: Iterable[str]) -> dict[str, int]:
        """Internal ids for these external ids, creating missing customers (conflict-tolerant)."""
        wanted = sorted(set(external_ids))  # one lock order for every writer: no deadlocks
        found: dict[str, int] = {}
        statement = dialect_insert(self.session, Customer).on_conflict_do_nothing(
            index_elements=["external_id"]
        )
        # FOR SHARE holds off a concurrent erasure until this transaction ends; a customer
        # erased between our insert and our select is simply created again on the next pass.
        while missing := [e for e in wanted if e not in found]:
            await self.session.execute(statement, [{"external_id": e} for e in missing])
            rows = await self.session.execute(
                select(Customer.external_id, Customer.id)
                .where(Customer.external_id.in_(missing))
                .with_for_update(read=True)
            )
            found.update((external_id, pk) for external_id, pk in rows)
        return found

    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert rows, skipping event_ids already stored; returns the event_ids inserted."""
        if not rows:
            return set()
        statement = (
            dialect_insert(self.session, Event)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(Event.event_id)
        )
        ordered = sorted(rows, key=lambda row: row["event_id"])
        result = await self.session.execute(statement, ordered)
        return set(result.scalars().all())

    async def by_event_ids(self, event_ids: Iterable[str]) -> dict[str, tuple[Event, str]]:
        """Stored events (with their customer's external id) by event_id."""
        ids = list(set(event_ids))
        if not ids:
            return {}
        rows = await self.session.execute(
            select(Event, Customer.external_id)
            .join(Customer, Customer.id == Event.customer_id)
            .where(Event.event_id.in_(ids))
        )
        return {event.event_id: (event, external_id) for event, external_id in rows}

    async def page_for_customer(
        self, customer_pk: int, limit: int, after: tuple[dt.datetime, int] | None
    ) -> list[Event]:
        """Up to `limit` events of one customer, newest first, strictly after the cursor."""
        query: Select[Event] = select(Event).where(Event.customer_id == customer_pk)
        if after is not None:
            occurred_at, row_id = after
            query = query.where(
                or_(
                    Event.occurred_at < occurred_at,
                    and_(Event.occurred_at == occurred_at, Event.id < row_id),
                )
            )
        query = query.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars().all())
