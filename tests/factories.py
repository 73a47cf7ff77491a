"""Plain factory functions for test payloads."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

_counter = itertools.count()


def iso(moment: dt.datetime) -> str:
    """RFC 3339 text of an aware datetime."""
    return moment.isoformat()


def event(kind: str = "order", /, **overrides: Any) -> dict[str, Any]:
    """A valid event payload; money fields only for order/refund."""
    n = next(_counter)
    body: dict[str, Any] = {
        "event_id": f"evt-{n}",
        "customer_id": "cust-1",
        "type": kind,
        "occurred_at": iso(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC) + dt.timedelta(minutes=n)),
    }
    if kind in ("order", "refund"):
        body |= {"amount": "25.00", "currency": "USD", "order_id": f"o-{n}"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}
