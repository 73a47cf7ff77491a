"""SQL for events and the customer rows they hang off.

On Postgres every multi-row write is one statement over `unnest()`-ed arrays: constant SQL
text (prepared once per connection) whatever the batch size. SQLite uses SQLAlchemy's
multi-row VALUES.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Select, and_, any_, bindparam, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Customer
from app.db import UTCDateTime
from app.events.models import Event
from app.features.rollups import additive_upsert, day_span, recompute_statement


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def any_events(connection: Connection) -> bool:
    """True when at least one event is stored (`clv generate-demo --if-empty`)."""
    return connection.execute(select(Event.id).limit(1)).first() is not None


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored, with its customer's external id."""

    event_id: str
    customer_id: str
    type: str
    occurred_at: dt.datetime
    amount: Decimal | None
    currency: str | None
    order_id: str | None
    properties: dict[str, Any] | None
    received_at: dt.datetime


_PG_CUSTOMERS_SELECT = text(
    "SELECT external_id, id FROM customers WHERE external_id = ANY(CAST(:ids AS text[])) "
    "ORDER BY external_id FOR SHARE"
)
_PG_CUSTOMERS_INSERT = text(
    "INSERT INTO customers (external_id) "
    "SELECT x FROM unnest(CAST(:ids AS text[])) AS t(x) ORDER BY x "
    "ON CONFLICT (external_id) DO NOTHING"
)
# The events and their daily rollups in one statement: the rollup CTE adds exactly the rows
# this INSERT wrote (see app.features.rollups).
_PG_EVENTS_INSERT = text(
    """
    WITH ins AS (
    INSERT INTO events (event_id, customer_id, type, occurred_at, amount, currency, order_id, properties)
    SELECT event_id, customer_id, type, occurred_at, amount, currency, order_id, CAST(properties AS jsonb)
    FROM unnest(CAST(:event_id AS text[]), CAST(:customer_id AS bigint[]), CAST(:type AS text[]),
                CAST(:occurred_at AS timestamptz[]), CAST(:amount AS numeric[]), CAST(:currency AS text[]),
                CAST(:order_id AS text[]), CAST(:properties AS text[]))
         AS t(event_id, customer_id, type, occurred_at, amount, currency, order_id, properties)
    ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, received_at, customer_id, type, occurred_at, amount
    ), rolled AS (
    """
    + additive_upsert("ins")
    + """
    )
    SELECT event_id, received_at FROM ins
    """
).columns(received_at=UTCDateTime())

_STORED_COLUMNS = (
    Event.event_id,
    Customer.external_id,
    Event.type,
    Event.occurred_at,
    Event.amount,
    Event.currency,
    Event.order_id,
    Event.properties,
    Event.received_at,
)


class EventRepository:
    """Reads and writes events; never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    async def ensure_customers(self, external_ids: Iterable[str]) -> dict[str, int]:
        """Internal ids for these external ids, creating missing customers (conflict-tolerant).

        The rows are read FOR SHARE, which holds off a concurrent erasure until this transaction
        ends; a customer erased between our insert and our read is created again on the next pass.
        """
        wanted = sorted(set(external_ids))  # one lock order for every writer: no deadlocks
        found: dict[str, int] = {}
        first = True
        while missing := [e for e in wanted if e not in found]:
            if not first:
                await self._insert_customers(missing)
            found.update(await self._lock_customers(missing))
            first = False  # returning customers cost one round trip; new ones three
        return found

    async def _lock_customers(self, external_ids: list[str]) -> dict[str, int]:
        if self.postgres:
            rows = await self.session.execute(_PG_CUSTOMERS_SELECT, {"ids": external_ids})
        else:
            rows = await self.session.execute(
                select(Customer.external_id, Customer.id).where(
                    Customer.external_id.in_(external_ids)
                )
            )
        return {str(external_id): int(pk) for external_id, pk in rows}

    async def _insert_customers(self, external_ids: list[str]) -> None:
        if self.postgres:
            await self.session.execute(_PG_CUSTOMERS_INSERT, {"ids": external_ids})
        else:
            statement = dialect_insert(self.session, Customer).on_conflict_do_nothing(
                index_elements=["external_id"]
            )
            await self.session.execute(statement, [{"external_id": e} for e in external_ids])

    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> dict[str, dt.datetime]:
        """Insert rows, skipping event_ids already stored; returns received_at of those inserted."""
        if not rows:
            return {}
        if self.postgres:
            columns = (
                "event_id",
                "customer_id",
                "type",
                "occurred_at",
                "amount",
                "currency",
                "order_id",
            )
            params: dict[str, list[Any]] = {c: [r[c] for r in rows] for c in columns}
            params["properties"] = [
                None if r["properties"] is None else json.dumps(r["properties"]) for r in rows
            ]
            result = await self.session.execute(_PG_EVENTS_INSERT, params)
        else:
            statement = (
                dialect_insert(self.session, Event)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(Event.event_id, Event.received_at)
            )
            result = await self.session.execute(
                statement, sorted(rows, key=lambda r: r["event_id"])
            )
            inserted = {str(event_id): received_at for event_id, received_at in result}
            await self._recompute_rollups([r for r in rows if r["event_id"] in inserted])
            return inserted
        return {str(event_id): received_at for event_id, received_at in result}

    async def _recompute_rollups(self, rows: Sequence[dict[str, Any]]) -> None:
        """SQLite: rebuild the touched customers' rollups over the days these rows span."""
        if not rows:
            return
        lo, hi = day_span(r["occurred_at"] for r in rows)
        await self.session.execute(
            recompute_statement("sqlite"),
            {"customer_ids": sorted({r["customer_id"] for r in rows}), "lo": lo, "hi": hi},
        )

    async def by_event_ids(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """Stored events by event_id."""
        ids = list(set(event_ids))
        if not ids:
            return {}
        query = select(*_STORED_COLUMNS).join(Customer, Customer.id == Event.customer_id)
        if self.postgres:
            ids_array = bindparam("ids", ids, type_=postgresql.ARRAY(Event.event_id.type))
            query = query.where(Event.event_id == any_(ids_array))
        else:
            query = query.where(Event.event_id.in_(ids))
        rows = await self.session.execute(query)
        return {row[0]: StoredEvent(*row) for row in rows}

    async def page_for_customer(
        self, customer_pk: int, limit: int, after: tuple[dt.datetime, int] | None
    ) -> list[tuple[StoredEvent, int]]:
        """Up to `limit` events of one customer (with row ids), newest first, after the cursor."""
        query: Select[Any] = (
            select(*_STORED_COLUMNS, Event.id)
            .join(Customer, Customer.id == Event.customer_id)
            .where(Event.customer_id == customer_pk)
        )
        if after is not None:
            occurred_at, row_id = after
            query = query.where(
                or_(
                    Event.occurred_at < occurred_at,
                    and_(Event.occurred_at == occurred_at, Event.id < row_id),
                )
            )
        query = query.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(limit)
        rows = await self.session.execute(query)
        return [(StoredEvent(*row[:-1]), row[-1]) for row in rows]
