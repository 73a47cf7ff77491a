"""SQL behind the data-quality report: one statement per check, on Postgres and SQLite.

Every check returns its offending rows in one shape (customer, event, order, instant, amount,
related event, related amount), the first `:limit` of them, each carrying the total count and
amount of all offending rows (window aggregates over the whole result, before the LIMIT).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, TextClause, bindparam, text

from app.db import UTCDateTime

# Per-dialect fragments: {seconds(a, b)} is b - a in seconds, {minute} the UTC minute of an event.
_DIALECT = {
    "postgresql": {
        "seconds": "EXTRACT(EPOCH FROM ({b} - {a}))",
        "minute": "date_trunc('minute', e.occurred_at)",
    },
    "sqlite": {
        # Thresholds are hours and days: julianday's millisecond rounding does not matter here.
        "seconds": "((julianday({b}) - julianday({a})) * 86400.0)",
        "minute": "substr(e.occurred_at, 1, 16)",
    },
}

_TAIL = """
ORDER BY sort_at, sort_key
LIMIT :limit
"""

# Each: SELECT customer_id, event_id, order_id, occurred_at, amount, related_event_id,
#       related_amount, n, total, sort_at, sort_key
CHECK_SQL: dict[str, str] = {
    "orphan_refunds": """
SELECT c.external_id, r.event_id, r.order_id, r.occurred_at, r.amount, NULL, NULL,
       count(*) OVER () AS n, SUM(r.amount) OVER () AS total,
       r.occurred_at AS sort_at, r.event_id AS sort_key
FROM events r JOIN customers c ON c.id = r.customer_id
WHERE r.type = 'refund' AND r.occurred_at <= :as_of
  AND NOT EXISTS (
      SELECT 1 FROM events o
      WHERE o.customer_id = r.customer_id AND o.type = 'order' AND o.order_id = r.order_id
        AND o.occurred_at <= :as_of)
""",
    "refunds_exceeding_order": """
WITH ordered AS (
    SELECT customer_id, order_id, SUM(amount) AS amount, MIN(occurred_at) AS at
    FROM events
    WHERE type = 'order' AND order_id IS NOT NULL AND occurred_at <= :as_of
    GROUP BY customer_id, order_id
), refunded AS (
    SELECT customer_id, order_id, SUM(amount) AS amount, MAX(event_id) AS event_id
    FROM events
    WHERE type = 'refund' AND order_id IS NOT NULL AND occurred_at <= :as_of
    GROUP BY customer_id, order_id
)
SELECT c.external_id, r.event_id, r.order_id, o.at, r.amount, NULL, o.amount,
       count(*) OVER () AS n, SUM(r.amount - o.amount) OVER () AS total,
       o.at AS sort_at, r.order_id AS sort_key
FROM refunded r
JOIN ordered o ON o.customer_id = r.customer_id AND o.order_id = r.order_id
JOIN customers c ON c.id = r.customer_id
WHERE r.amount > o.amount
""",
    "negative_net_revenue": """
SELECT c.external_id, NULL, NULL, m.first_at, m.refunded, NULL, m.ordered,
       count(*) OVER () AS n, SUM(m.refunded - m.ordered) OVER () AS total,
       m.first_at AS sort_at, c.external_id AS sort_key
FROM (
    SELECT customer_id, MIN(occurred_at) AS first_at,
           SUM(CASE WHEN type = 'order' THEN amount ELSE 0 END) AS ordered,
           SUM(CASE WHEN type = 'refund' THEN amount ELSE 0 END) AS refunded
    FROM events
    WHERE type IN ('order', 'refund') AND occurred_at <= :as_of
    GROUP BY customer_id
) m JOIN customers c ON c.id = m.customer_id
WHERE m.refunded > m.ordered
""",
    "zero_amount_orders": """
SELECT c.external_id, e.event_id, e.order_id, e.occurred_at, e.amount, NULL, NULL,
       count(*) OVER () AS n, NULL AS total, e.occurred_at AS sort_at, e.event_id AS sort_key
FROM events e JOIN customers c ON c.id = e.customer_id
WHERE e.type = 'order' AND e.amount = 0 AND e.occurred_at <= :as_of
""",
    "duplicate_orders": """
SELECT external_id, event_id, order_id, occurred_at, amount, first_event_id, NULL,
       count(*) OVER () AS n, SUM(amount) OVER () AS total,
       occurred_at AS sort_at, event_id AS sort_key
FROM (
    SELECT c.external_id, e.event_id, e.order_id, e.occurred_at, e.amount,
           ROW_NUMBER() OVER same AS k, FIRST_VALUE(e.event_id) OVER same AS first_event_id
    FROM events e JOIN customers c ON c.id = e.customer_id
    WHERE e.type = 'order' AND e.occurred_at <= :as_of
    WINDOW same AS (PARTITION BY e.customer_id, e.amount, {minute}
                    ORDER BY e.occurred_at, e.event_id)
) d
WHERE k > 1
""",
    "early_events": """
SELECT external_id, event_id, order_id, occurred_at, amount, next_event_id, NULL,
       count(*) OVER () AS n, NULL AS total, occurred_at AS sort_at, event_id AS sort_key
FROM (
    SELECT c.external_id, e.event_id, e.order_id, e.occurred_at, e.amount,
           ROW_NUMBER() OVER walk AS k,
           LEAD(e.occurred_at) OVER walk AS next_at, LEAD(e.event_id) OVER walk AS next_event_id
    FROM events e JOIN customers c ON c.id = e.customer_id
    WHERE e.occurred_at <= :as_of
    WINDOW walk AS (PARTITION BY e.customer_id ORDER BY e.occurred_at, e.id)
) w
WHERE k = 1 AND next_at IS NOT NULL AND {seconds_occurred_to_next} > :early_gap_seconds
""",
    "future_events": """
SELECT c.external_id, e.event_id, e.order_id, e.occurred_at, e.amount, NULL, NULL,
       count(*) OVER () AS n, NULL AS total, e.occurred_at AS sort_at, e.event_id AS sort_key
FROM events e JOIN customers c ON c.id = e.customer_id
WHERE e.received_at <= :as_of AND {seconds_received_to_occurred} > :future_skew_seconds
""",
    "late_events": """
SELECT c.external_id, e.event_id, e.order_id, e.occurred_at, e.amount, NULL, NULL,
       count(*) OVER () AS n, NULL AS total, e.occurred_at AS sort_at, e.event_id AS sort_key
FROM events e JOIN customers c ON c.id = e.customer_id
WHERE e.occurred_at <= :as_of AND {seconds_occurred_to_received} > :late_seconds
""",
    "money_events_without_order_id": """
SELECT c.external_id, e.event_id, e.order_id, e.occurred_at, e.amount, NULL, NULL,
       count(*) OVER () AS n, SUM(e.amount) OVER () AS total,
       e.occurred_at AS sort_at, e.event_id AS sort_key
FROM events e JOIN customers c ON c.id = e.customer_id
WHERE e.type IN ('order', 'refund') AND e.order_id IS NULL AND e.occurred_at <= :as_of
""",
    "customers_without_events": """
SELECT c.external_id, NULL, NULL, c.created_at, NULL, NULL, NULL,
       count(*) OVER () AS n, NULL AS total, c.created_at AS sort_at, c.external_id AS sort_key
FROM customers c
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.customer_id = c.id)
""",
    "events_without_customer": """
SELECT NULL, e.event_id, e.order_id, e.occurred_at, e.amount, NULL, NULL,
       count(*) OVER () AS n, NULL AS total, e.occurred_at AS sort_at, e.event_id AS sort_key
FROM events e
WHERE e.occurred_at <= :as_of
  AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = e.customer_id)
""",
}

_POPULATIONS = """
SELECT
    (SELECT count(*) FROM events WHERE occurred_at <= :as_of) AS events,
    (SELECT count(*) FROM events WHERE type = 'order' AND occurred_at <= :as_of) AS orders,
    (SELECT count(*) FROM events WHERE type = 'refund' AND occurred_at <= :as_of) AS refunds,
    (SELECT count(*) FROM (
        SELECT DISTINCT r.customer_id, r.order_id FROM events r
        WHERE r.type = 'refund' AND r.order_id IS NOT NULL AND r.occurred_at <= :as_of
          AND EXISTS (
              SELECT 1 FROM events o
              WHERE o.customer_id = r.customer_id AND o.type = 'order'
                AND o.order_id = r.order_id AND o.occurred_at <= :as_of)) p
    ) AS refunded_orders,
    (SELECT count(DISTINCT customer_id) FROM events
     WHERE type IN ('order', 'refund') AND occurred_at <= :as_of) AS paying_customers,
    (SELECT count(*) FROM customers) AS customers,
    (SELECT count(*) FROM (
        SELECT customer_id FROM events WHERE occurred_at <= :as_of
        GROUP BY customer_id HAVING count(*) > 1) m
    ) AS customers_with_history
"""


@dataclass(frozen=True)
class Offending:
    """What one check found: the count, the money involved and the first few rows."""

    count: int
    amount: Decimal | None
    examples: list[tuple[Any, ...]]  # customer, event, order, instant, amount, related x2


def _money(value: Any) -> Decimal | None:
    """A SQL sum (numeric on Postgres, float on SQLite) as pence/cents."""
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


@lru_cache(maxsize=32)
def check_statement(dialect: str, name: str) -> TextClause:
    """The statement of one check for a dialect, with typed parameters."""
    d = _DIALECT[dialect]
    sql = CHECK_SQL[name].format(
        minute=d["minute"],
        seconds_occurred_to_next=d["seconds"].format(a="occurred_at", b="next_at"),
        seconds_received_to_occurred=d["seconds"].format(a="e.received_at", b="e.occurred_at"),
        seconds_occurred_to_received=d["seconds"].format(a="e.occurred_at", b="e.received_at"),
    )
    statement = text(sql + _TAIL)
    if ":as_of" in sql:
        statement = statement.bindparams(bindparam("as_of", type_=UTCDateTime()))
    return statement


class QualityRepository:
    """Read-only queries for the data-quality report, on a synchronous connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    def populations(self, as_of: dt.datetime) -> dict[str, int]:
        """Denominators: events, orders, refunds, refunded orders, customers (with history)."""
        statement = text(_POPULATIONS).bindparams(bindparam("as_of", type_=UTCDateTime()))
        row = self.connection.execute(statement, {"as_of": as_of}).one()
        return {key: int(value or 0) for key, value in row._mapping.items()}

    def offending(
        self, name: str, as_of: dt.datetime, limit: int, **thresholds: float
    ) -> Offending:
        """Rows breaking check `name` as of `as_of`: count, money and up to `limit` examples."""
        statement = check_statement(self.dialect, name)
        params: dict[str, Any] = {"as_of": as_of, "limit": limit, **thresholds}
        rows = self.connection.execute(statement, params).all()
        if not rows:
            return Offending(0, None, [])
        first = rows[0]
        examples = [
            (
                r[0],
                r[1],
                r[2],
                _instant(r[3]),
                _money(r[4]),
                r[5],
                _money(r[6]),
            )
            for r in rows
        ]
        return Offending(int(first[7]), _money(first[8]), examples)


def _instant(value: Any) -> dt.datetime | None:
    """Raw instants (text on SQLite, aware on Postgres) as aware UTC."""
    if value is None:
        return None
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, dt.datetime)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
