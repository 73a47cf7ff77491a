"""SQL for training labels: what each customer did in the window after a cutoff."""

from __future__ import annotations

import datetime as dt

import numpy as np
from sqlalchemy import Engine, bindparam, text

from app.db import UTCDateTime

_CENTS = {
    "postgresql": "(e.amount * 100)::bigint",
    "sqlite": "CAST(ROUND(e.amount * 100) AS INTEGER)",
}

LABEL_SQL = """
SELECT c.external_id,
       SUM(CASE WHEN e.type = 'order' THEN {cents} ELSE 0 END)
         - SUM(CASE WHEN e.type = 'refund' THEN {cents} ELSE 0 END) AS net_cents,
       SUM(CASE WHEN e.type = 'order' THEN 1 ELSE 0 END) AS orders
FROM events e JOIN customers c ON c.id = e.customer_id
WHERE e.occurred_at > :start AND e.occurred_at <= :end AND e.type IN ('order', 'refund')
GROUP BY c.external_id
"""


def window_labels(
    engine: Engine, start: dt.datetime, days: int, customer_ids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(net revenue floored at 0, order count) in (start, start + days] for the given customers."""
    statement = text(LABEL_SQL.format(cents=_CENTS[engine.dialect.name])).bindparams(
        bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())
    )
    end = start + dt.timedelta(days=days)
    with engine.connect() as connection:
        rows = connection.execute(statement, {"start": start, "end": end}).all()
    by_customer = {str(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in rows}
    net = np.array([by_customer.get(c, (0, 0))[0] for c in customer_ids], dtype=np.float64) / 100
    orders = np.array([by_customer.get(c, (0, 0))[1] for c in customer_ids], dtype=np.int64)
    return np.maximum(net, 0.0), orders
