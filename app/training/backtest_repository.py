"""SQL the backtest needs besides features and labels: how far the event log reaches."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from app.events.models import Event


@dataclass(frozen=True)
class LogExtent:
    """First and last `occurred_at` of the stored order/refund events (None when there are none)."""

    first: dt.datetime | None
    last: dt.datetime | None
    events: int


def order_log_extent(engine: Engine) -> LogExtent:
    """The time span the stored orders and refunds cover."""
    statement = select(
        func.min(Event.occurred_at), func.max(Event.occurred_at), func.count()
    ).where(Event.type.in_(("order", "refund")))
    with engine.connect() as connection:
        first, last, count = connection.execute(statement).one()
    return LogExtent(first=first, last=last, events=int(count))
