"""SQL for training: labels (what each customer did after a cutoff) and the data fingerprint.

Label rules (docs/accuracy.md):
- CLV label = orders placed in (start, end] minus the refunds made in (start, end] that refund
  an order placed after `start`, floored at 0 per customer.
- A refund is matched to its order by (customer, `order_id`). A refund of an order placed on or
  before `start` belongs to the past: it does not touch the label.
- An orphan refund (no order of that customer carries its `order_id`, or it has none) is taken
  to refund the customer's latest order placed at or before it: it reduces the label when that
  order is inside the window, and is ignored when that order predates the window (or there is
  no earlier order at all).
- Churn label: no order in (start, end]; refunds play no part.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import numpy as np
from sqlalchemy import Engine, bindparam, func, select, text

from app.customers.models import Customer
from app.db import UTCDateTime
from app.events.models import Event

_CENTS = {
    "postgresql": "(e.amount * 100)::bigint",
    "sqlite": "CAST(ROUND(e.amount * 100) AS INTEGER)",
}

LABEL_SQL = """
WITH window_events AS (
    SELECT e.customer_id, e.type, {cents} AS cents,
           CASE WHEN e.type = 'refund' THEN COALESCE(
               (SELECT MIN(o.occurred_at) FROM events o
                 WHERE o.customer_id = e.customer_id AND o.type = 'order'
                   AND o.order_id = e.order_id),
               (SELECT MAX(o.occurred_at) FROM events o
                 WHERE o.customer_id = e.customer_id AND o.type = 'order'
                   AND o.occurred_at <= e.occurred_at)
           ) END AS refunded_order_at
    FROM events e
    WHERE e.occurred_at > :start AND e.occurred_at <= :end AND e.type IN ('order', 'refund'){scope}
)
SELECT c.external_id,
       SUM(CASE WHEN w.type = 'order' THEN w.cents ELSE 0 END)
         - SUM(CASE WHEN w.type = 'refund' AND w.refunded_order_at > :start
                    THEN w.cents ELSE 0 END) AS net_cents,
       SUM(CASE WHEN w.type = 'order' THEN 1 ELSE 0 END) AS orders
FROM window_events w JOIN customers c ON c.id = w.customer_id
GROUP BY c.external_id
"""

FINGERPRINT_SQL = """
SELECT type, COUNT(*), MAX(occurred_at), MAX(received_at) FROM events GROUP BY type ORDER BY type
"""


def window_labels(
    engine: Engine, start: dt.datetime, days: int, customer_ids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(net revenue floored at 0, order count) in (start, start + days] for the given customers."""
    return _labels(engine, start, days, customer_ids, None)


def range_labels(
    engine: Engine, start: dt.datetime, days: int, customer_ids: list[str], lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """`window_labels` reading only the customers with internal ids in [lo, hi) (a Dask range)."""
    return _labels(engine, start, days, customer_ids, (lo, hi))


def _labels(
    engine: Engine,
    start: dt.datetime,
    days: int,
    customer_ids: list[str],
    id_range: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    scope = "" if id_range is None else " AND e.customer_id >= :lo AND e.customer_id < :hi"
    statement = text(LABEL_SQL.format(cents=_CENTS[engine.dialect.name], scope=scope)).bindparams(
        bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())
    )
    end = start + dt.timedelta(days=days)
    values: dict[str, Any] = {"start": start, "end": end}
    if id_range is not None:
        values |= {"lo": id_range[0], "hi": id_range[1]}
    with engine.connect() as connection:
        rows = connection.execute(statement, values).all()
    by_customer = {str(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in rows}
    net = np.array([by_customer.get(c, (0, 0))[0] for c in customer_ids], dtype=np.float64) / 100
    orders = np.array([by_customer.get(c, (0, 0))[1] for c in customer_ids], dtype=np.int64)
    return np.maximum(net, 0.0), orders


def data_fingerprint(engine: Engine, content: str | None = None) -> dict[str, Any]:
    """Event counts by type and the latest occurred_at / received_at: what the model was fed.

    `content` is `content_sha256` when already computed (summed over ranges by Dask workers).
    """
    with engine.connect() as connection:
        rows = connection.execute(text(FINGERPRINT_SQL)).all()
    counts = {str(r[0]): int(r[1]) for r in rows}

    def latest(values: list[Any]) -> str | None:
        present = [_instant(v) for v in values if v is not None]
        return max(present).isoformat() if present else None

    with engine.connect() as connection:
        customers = int(connection.execute(select(func.count()).select_from(Customer)).scalar_one())
        first = connection.execute(select(func.min(Event.occurred_at))).scalar_one()
    return {
        "events_by_type": counts,
        "events": sum(counts.values()),
        "customers": customers,
        "min_occurred_at": first.isoformat() if first is not None else None,
        "max_occurred_at": latest([r[2] for r in rows]),
        "max_received_at": latest([r[3] for r in rows]),
        "content_sha256": content if content is not None else content_sha256(engine),
    }


def content_sha256(engine: Engine) -> str:
    """A multiset hash of every event's content (customer external id, event id, type, instant,
    amount, order id): the sum of the rows' sha256 modulo 2**256, so it is equal for equal data
    however it was loaded and whatever order (or collation) the database returns rows in."""
    return f"{content_sum(engine) % 2**256:064x}"


def content_sum(engine: Engine, id_range: tuple[int, int] | None = None) -> int:
    """The sum behind `content_sha256`, of every event or of the customers with ids in [lo, hi)
    (a sum: ranges add up to the whole, so Dask workers can each hash their own range)."""
    total = 0
    statement = select(
        Customer.external_id,
        Event.event_id,
        Event.type,
        Event.occurred_at,
        Event.amount,
        Event.order_id,
    ).join(Customer, Customer.id == Event.customer_id)
    if id_range is not None:
        statement = statement.where(
            Event.customer_id >= id_range[0], Event.customer_id < id_range[1]
        )
    with engine.connect() as connection:
        for row in connection.execution_options(yield_per=50_000).execute(statement):
            amount = "" if row[4] is None else f"{row[4]:.2f}"
            instant = row[3].astimezone(dt.UTC).isoformat()
            line = f"{row[0]}|{row[1]}|{row[2]}|{instant}|{amount}|{row[5] or ''}"
            total += int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")
    return total


def _instant(value: Any) -> dt.datetime:
    """A driver's timestamp (datetime, or SQLite text) as an aware UTC datetime."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
