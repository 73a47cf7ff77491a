"""Bulk loading of event columns: COPY on Postgres, batched INSERT OR IGNORE on SQLite.

Used by `clv import-transactions` and `clv generate-demo`. Loading is idempotent on
`event_id` (and on customer external id), so re-running an import adds nothing.

Over 400 lines: one loader whose Postgres (COPY) and SQLite paths must stay in step (the same
idempotency and conflict rules), with the SQL they run.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.dialects import sqlite

from app.customers.models import Customer
from app.events.models import Event
from app.features.rollups import additive_upsert, day_span, recompute_statement

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class CustomerColumns:
    """Customer profiles, column-wise; empty strings and -1 timestamps mean null."""

    external_id: np.ndarray
    signup_at_us: np.ndarray  # int64 µs since the Unix epoch, UTC; -1 = unknown
    country: np.ndarray
    acquisition_channel: np.ndarray

    def __len__(self) -> int:
        return len(self.external_id)


@dataclass(frozen=True)
class EventColumns:
    """Events, column-wise; amount_cents -1 and order_id "" mean null."""

    event_id: np.ndarray
    customer_external_id: np.ndarray
    type: np.ndarray
    occurred_at_us: np.ndarray  # int64 µs since the Unix epoch, UTC
    amount_cents: np.ndarray  # int64
    order_id: np.ndarray
    source_line: np.ndarray | None = None  # int64 line numbers in the file read, if any

    def __len__(self) -> int:
        return len(self.event_id)

    def line(self, index: int) -> int | None:
        """The file line of row `index`, when the columns came from a file."""
        return None if self.source_line is None else int(self.source_line[index])


class BulkConflict(Exception):
    """Event ids already stored with other content (ids are idempotency keys, never reused)."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(
            f"{len(event_ids)} event id(s) already stored with different content: "
            + ", ".join(repr(e) for e in event_ids[:5])
        )
        self.event_ids = event_ids


@dataclass
class LoadStats:
    """What a load added; `events_skipped` were already stored (same event_id)."""

    events_seen: int = 0
    events_created: int = 0
    customers_created: int = 0
    customers_seen: int = 0  # profile rows offered (generate-demo); 0 for plain event logs

    @property
    def events_skipped(self) -> int:
        return self.events_seen - self.events_created


_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_events (
    event_id text, customer text, type text, occurred_us bigint, amount_cents bigint, order_id text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_customers (
    external_id text, signup_us bigint, country text, channel text
) ON COMMIT DELETE ROWS;
"""

_PG_CUSTOMERS_FROM_PROFILES = """
INSERT INTO customers (external_id, signup_at, country, acquisition_channel)
SELECT external_id,
       CASE WHEN signup_us < 0 THEN NULL
            ELSE timestamptz 'epoch' + signup_us * interval '1 microsecond' END,
       NULLIF(country, ''), NULLIF(channel, '')
FROM stage_customers
ON CONFLICT (external_id) DO NOTHING
"""

_PG_CUSTOMERS_FROM_EVENTS = """
INSERT INTO customers (external_id)
SELECT DISTINCT customer FROM stage_events ORDER BY 1
ON CONFLICT (external_id) DO NOTHING
"""

# Holds off an erasure of these customers until the chunk commits (erasure row-locks the
# customer FOR UPDATE), as `ensure_customers` and the scoring repository do. A customer erased
# between our insert and this lock is missing from the count: it is created again and locked.
_PG_LOCK_CUSTOMERS = """
SELECT count(*) FROM (
    SELECT c.id FROM customers c
    WHERE c.external_id IN (SELECT customer FROM stage_events)
    ORDER BY c.external_id
    FOR KEY SHARE OF c
) AS locked
"""
_PG_STAGED_CUSTOMERS = "SELECT count(DISTINCT customer) FROM stage_events"

# The events and their daily rollups in one statement (see app.features.rollups); the count is
# the number of events inserted.
_PG_EVENTS = (
    """
WITH ins AS (
INSERT INTO events (event_id, customer_id, type, occurred_at, amount, currency, order_id)
SELECT s.event_id, c.id, s.type,
       timestamptz 'epoch' + s.occurred_us * interval '1 microsecond',
       CASE WHEN s.amount_cents < 0 THEN NULL ELSE s.amount_cents / 100.0 END,
       CASE WHEN s.amount_cents < 0 THEN NULL ELSE %(currency)s END,
       NULLIF(s.order_id, '')
FROM stage_events s JOIN customers c ON c.external_id = s.customer
ORDER BY s.event_id
ON CONFLICT (event_id) DO NOTHING
RETURNING customer_id, type, occurred_at, amount
), rolled AS (
"""
    + additive_upsert("ins")
    + """
)
SELECT count(*) FROM ins
"""
)


# Stage rows whose event_id is stored with other content (what the API answers 409 for).
_PG_STAGE_CONFLICTS = """
SELECT DISTINCT s.event_id
FROM stage_events s
JOIN events e ON e.event_id = s.event_id
LEFT JOIN customers c ON c.id = e.customer_id
WHERE c.external_id IS DISTINCT FROM s.customer
   OR e.type <> s.type
   OR e.occurred_at <> timestamptz 'epoch' + s.occurred_us * interval '1 microsecond'
   OR e.amount IS DISTINCT FROM
      (CASE WHEN s.amount_cents < 0 THEN NULL ELSE s.amount_cents / 100.0 END)
   OR e.currency IS DISTINCT FROM (CASE WHEN s.amount_cents < 0 THEN NULL ELSE %(currency)s END)
   OR e.order_id IS DISTINCT FROM NULLIF(s.order_id, '')
   OR e.properties IS NOT NULL
ORDER BY 1
"""

_StoredContent = tuple[str | None, str, int, int | None, str | None, str | None, bool]


class BulkLoader:
    """Loads column chunks into customers/events, one transaction per chunk."""

    def __init__(self, engine: Engine, currency: str) -> None:
        self.engine = engine
        self.currency = currency
        self.postgres = engine.dialect.name == "postgresql"

    def load(self, events: EventColumns, customers: CustomerColumns | None = None) -> LoadStats:
        """Load one chunk; returns what it added."""
        if self.postgres:
            return self._load_postgres(events, customers)
        return self._load_sqlite(events, customers)

    def conflicts(self, events: EventColumns) -> list[int]:
        """Rows whose event_id is already stored with different content (nothing is written)."""
        if self.postgres:  # compared in SQL: a re-import reads no stored rows into Python
            raw = self.engine.raw_connection()
            try:
                connection = raw.driver_connection
                assert connection is not None
                with connection.cursor() as cursor:
                    cursor.execute(_STAGE_DDL)
                    with cursor.copy(
                        "COPY stage_events (event_id, customer, type, occurred_us, amount_cents, "
                        "order_id) FROM STDIN"
                    ) as copy:
                        copy.write(_event_lines(events))
                    cursor.execute(_PG_STAGE_CONFLICTS, {"currency": self.currency})
                    taken = {str(row[0]) for row in cursor.fetchall()}
            finally:
                raw.rollback()
                raw.close()
            return [i for i, e in enumerate(events.event_id.tolist()) if e in taken]
        with self.engine.connect() as connection:
            return self._conflicting_rows(connection, events)

    def _conflicting_rows(self, connection: Connection, events: EventColumns) -> list[int]:
        """SQLite: stored rows read back and compared in Python."""
        ids = sorted({str(e) for e in events.event_id})
        stored: dict[str, _StoredContent] = {}
        columns = (
            Event.event_id,
            Customer.external_id,
            Event.type,
            Event.occurred_at,
            Event.amount,
            Event.currency,
            Event.order_id,
            Event.properties.is_not(None),
        )
        for start in range(0, len(ids), 10_000):
            part = ids[start : start + 10_000]
            query = (
                select(*columns)
                .outerjoin(Customer, Customer.id == Event.customer_id)
                .where(Event.event_id.in_(part))
            )
            for (
                event_id,
                customer,
                kind,
                occurred,
                amount,
                currency,
                order,
                props,
            ) in connection.execute(query):
                stored[event_id] = (
                    customer,
                    kind,
                    _micros(occurred),
                    None if amount is None else int(Decimal(amount).scaleb(2)),
                    currency,
                    order,
                    bool(props),
                )
        if not stored:
            return []
        found = []
        for index, (event_id, customer, kind, us, cents, order) in enumerate(
            zip(
                events.event_id.tolist(),
                events.customer_external_id.tolist(),
                events.type.tolist(),
                events.occurred_at_us.tolist(),
                events.amount_cents.tolist(),
                events.order_id.tolist(),
                strict=True,
            )
        ):
            have = stored.get(event_id)
            money = cents >= 0
            offered = (
                customer,
                kind,
                us,
                cents if money else None,
                self.currency if money else None,
                order or None,
                False,
            )
            if have is not None and have != offered:
                found.append(index)
        return found

    def load_all(
        self, chunks: Iterable[tuple[EventColumns, CustomerColumns | None]], workers: int = 2
    ) -> Iterator[LoadStats]:
        """Load chunks, `workers` at a time on Postgres (one connection each), yielding stats.

        Postgres runs one statement on one core; two connections keep both cores of a small
        machine busy while Python formats the next chunk.
        """
        if workers <= 1 or not self.postgres:
            for events, customers in chunks:
                yield self.load(events, customers)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulk-load") as pool:
            pending: deque[Future[LoadStats]] = deque()
            for events, customers in chunks:
                pending.append(pool.submit(self.load, events, customers))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _load_postgres(self, events: EventColumns, customers: CustomerColumns | None) -> LoadStats:
        stats = LoadStats(events_seen=len(events))
        raw = self.engine.raw_connection()
        try:
            connection = raw.driver_connection
            assert connection is not None
            with connection.cursor() as cursor:
                cursor.execute(_STAGE_DDL)
                if customers is not None and len(customers):
                    with cursor.copy(
                        "COPY stage_customers (external_id, signup_us, country, channel) FROM STDIN"
                    ) as copy:
                        copy.write(_customer_lines(customers))
                    cursor.execute(_PG_CUSTOMERS_FROM_PROFILES)
                    stats.customers_created += max(cursor.rowcount, 0)
                with cursor.copy(
                    "COPY stage_events (event_id, customer, type, occurred_us, amount_cents, order_id) "
                    "FROM STDIN"
                ) as copy:
                    copy.write(_event_lines(events))
                cursor.execute(_PG_STAGED_CUSTOMERS)
                wanted = _scalar(cursor.fetchone())
                while True:
                    cursor.execute(_PG_CUSTOMERS_FROM_EVENTS)
                    stats.customers_created += max(cursor.rowcount, 0)
                    cursor.execute(_PG_LOCK_CUSTOMERS)
                    if _scalar(cursor.fetchone()) == wanted:
                        break
                cursor.execute(_PG_EVENTS, {"currency": self.currency})
                stats.events_created = _scalar(cursor.fetchone())
                if stats.events_created < stats.events_seen:  # some ids were taken: by what?
                    cursor.execute(_PG_STAGE_CONFLICTS, {"currency": self.currency})
                    conflicting = [str(row[0]) for row in cursor.fetchall()]
                    if conflicting:
                        raise BulkConflict(conflicting)
            connection.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        return stats

    def _load_sqlite(self, events: EventColumns, customers: CustomerColumns | None) -> LoadStats:
        stats = LoadStats(events_seen=len(events))
        with self.engine.begin() as connection:
            before = connection.execute(select(func.count()).select_from(Customer)).scalar_one()
            if customers is not None and len(customers):
                profiles: list[dict[str, object]] = [
                    {
                        "external_id": str(e),
                        "signup_at": None if s < 0 else EPOCH + dt.timedelta(microseconds=int(s)),
                        "country": str(c) or None,
                        "acquisition_channel": str(ch) or None,
                    }
                    for e, s, c, ch in zip(
                        customers.external_id,
                        customers.signup_at_us,
                        customers.country,
                        customers.acquisition_channel,
                        strict=True,
                    )
                ]
                connection.execute(sqlite.insert(Customer).on_conflict_do_nothing(), profiles)
            wanted = sorted({str(c) for c in events.customer_external_id})
            # An empty executemany would insert one row of defaults (a profiles-only chunk).
            if wanted:
                connection.execute(
                    sqlite.insert(Customer).on_conflict_do_nothing(),
                    [{"external_id": e} for e in wanted],
                )
            ids: dict[str, int] = {}
            for start in range(0, len(wanted), 10_000):
                part = wanted[start : start + 10_000]
                result = connection.execute(
                    select(Customer.external_id, Customer.id).where(Customer.external_id.in_(part))
                )
                ids.update((external_id, pk) for external_id, pk in result)
            after = connection.execute(select(func.count()).select_from(Customer)).scalar_one()
            stats.customers_created = after - before
            amounts = events.amount_cents
            rows = [
                {
                    "event_id": str(event_id),
                    "customer_id": ids[str(customer)],
                    "type": str(kind),
                    "occurred_at": EPOCH + dt.timedelta(microseconds=int(us)),
                    "amount": None if cents < 0 else Decimal(int(cents)).scaleb(-2),
                    "currency": None if cents < 0 else self.currency,
                    "order_id": str(order) or None,
                }
                for event_id, customer, kind, us, cents, order in zip(
                    events.event_id,
                    events.customer_external_id,
                    events.type,
                    events.occurred_at_us,
                    amounts,
                    events.order_id,
                    strict=True,
                )
            ]
            if rows:
                result = connection.execute(insert(Event).prefix_with("OR IGNORE"), rows)
                stats.events_created = max(result.rowcount, 0)
                # One writer at a time: rebuild the touched days from the events (rollups.py).
                us = events.occurred_at_us
                lo, hi = day_span(
                    EPOCH + dt.timedelta(microseconds=int(x)) for x in (us.min(), us.max())
                )
                customer_ids = sorted(ids.values())
                for start in range(0, len(customer_ids), 10_000):
                    connection.execute(
                        recompute_statement("sqlite"),
                        {"customer_ids": customer_ids[start : start + 10_000], "lo": lo, "hi": hi},
                    )
            if stats.events_created < stats.events_seen:  # some ids were taken: by what?
                conflicting = self._conflicting_rows(connection, events)
                if conflicting:
                    raise BulkConflict(sorted({str(events.event_id[i]) for i in conflicting}))
        return stats


def _micros(moment: dt.datetime) -> int:
    delta = moment.astimezone(dt.UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _scalar(row: Any) -> int:
    assert row is not None
    return int(row[0])


def _copy_text(value: str) -> str:
    """Escape for COPY text format (ids are restricted, but channel/country are free text)."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _event_lines(events: EventColumns) -> bytes:
    buffer = io.StringIO()
    buffer.writelines(
        f"{e}\t{c}\t{t}\t{us}\t{cents}\t{o}\n"
        for e, c, t, us, cents, o in zip(
            events.event_id.tolist(),
            events.customer_external_id.tolist(),
            events.type.tolist(),
            events.occurred_at_us.tolist(),
            events.amount_cents.tolist(),
            events.order_id.tolist(),
            strict=True,
        )
    )
    return buffer.getvalue().encode()


def _customer_lines(customers: CustomerColumns) -> bytes:
    buffer = io.StringIO()
    buffer.writelines(
        f"{e}\t{s}\t{_copy_text(c)}\t{_copy_text(ch)}\n"
        for e, s, c, ch in zip(
            customers.external_id.tolist(),
            customers.signup_at_us.tolist(),
            customers.country.tolist(),
            customers.acquisition_channel.tolist(),
            strict=True,
        )
    )
    return buffer.getvalue().encode()
