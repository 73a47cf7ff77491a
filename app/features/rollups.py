"""SQL that keeps `daily_rollups` equal to the events table, one (customer, UTC day) per row.

Every rollup column is the aggregate the feature query's `daily` step computes for a whole day,
with the same per-event day and cents expressions (`DIALECT_EXPRESSIONS`), so a rollup row and
its day's raw events give the same numbers bit for bit. Callers run these statements in the
transaction that writes the events:

- Postgres adds the rows an INSERT ... RETURNING just wrote (`additive_upsert`, a CTE beside the
  insert): counts and cents add up, instants take LEAST/GREATEST, and ON CONFLICT row-locks the
  (customer, day) row, so concurrent writers of one day cannot lose each other's events.
- SQLite recomputes the touched days from the events table (`recompute_statement`): it has one
  writer at a time, so reading back inside the write transaction cannot race.
- Erasure deletes the customer's rows with their events (`app.customers.repository`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import TextClause, bindparam, text

from app.db import UTCDateTime
from app.features.definitions import day_number, day_start

COUNTS = (
    ("n_events", "TRUE"),
    ("n_timed", "e.type <> 'refund'"),
    ("n_refunds", "e.type = 'refund'"),
    ("n_orders", "e.type = 'order'"),
    ("n_sessions", "e.type = 'session'"),
    ("n_product_views", "e.type = 'product_view'"),
    ("n_carts", "e.type = 'add_to_cart'"),
)
CENTS = (("order_cents", "order"), ("refund_cents", "refund"))
# (column, MIN or MAX, filter): the same instants the feature query's `daily` step takes.
INSTANTS = (
    ("first_at", "MIN", "e.type <> 'refund'"),
    ("last_at", "MAX", "e.type <> 'refund'"),
    ("last_activity_at", "MAX", "e.type NOT IN ('order', 'refund')"),
    ("first_order_at", "MIN", "e.type = 'order'"),
    ("last_order_at", "MAX", "e.type = 'order'"),
)
COLUMNS = (
    "customer_id",
    "day",
    *(name for name, _ in COUNTS),
    *(name for name, _ in CENTS),
    *(name for name, _, _ in INSTANTS),
)


def _select(dialect: str, source: str, where: str) -> str:
    from app.features.repository import DIALECT_EXPRESSIONS

    d = DIALECT_EXPRESSIONS[dialect]
    cents = f"CASE WHEN e.amount IS NULL THEN 0 ELSE {d['cents']} END"
    parts = [
        "e.customer_id",
        d["day"],
        *(
            "COUNT(*)" if cond == "TRUE" else f"COUNT(*) FILTER (WHERE {cond})"
            for _, cond in COUNTS
        ),
        *(f"COALESCE(SUM({cents}) FILTER (WHERE e.type = '{kind}'), 0)" for _, kind in CENTS),
        *(f"{fn}(e.occurred_at) FILTER (WHERE {cond})" for _, fn, cond in INSTANTS),
    ]
    return (
        f"INSERT INTO daily_rollups ({', '.join(COLUMNS)})\n"
        f"SELECT {', '.join(parts)}\nFROM {source} e\nWHERE {where}\nGROUP BY 1, 2\nORDER BY 1, 2\n"
    )


def additive_upsert(source: str) -> str:
    """Postgres: add the events of `source` (e.g. a CTE over INSERT ... RETURNING) to the rollups."""
    merge = [f"{n} = daily_rollups.{n} + excluded.{n}" for n, _ in COUNTS]
    merge += [f"{n} = daily_rollups.{n} + excluded.{n}" for n, _ in CENTS]
    merge += [
        f"{n} = {'LEAST' if fn == 'MIN' else 'GREATEST'}(daily_rollups.{n}, excluded.{n})"
        for n, fn, _ in INSTANTS
    ]
    return (
        _select("postgresql", source, "TRUE")
        + "ON CONFLICT (customer_id, day) DO UPDATE SET "
        + ", ".join(merge)
    )


def _overwrite(dialect: str, where: str) -> str:
    sets = ", ".join(f"{n} = excluded.{n}" for n in COLUMNS[2:])
    return (
        _select(dialect, "events", where) + f"ON CONFLICT (customer_id, day) DO UPDATE SET {sets}"
    )


def recompute_statement(dialect: str) -> TextClause:
    """Rebuild the rollups of some customers' days in [:lo, :hi) from their events (idempotent)."""
    sql = _overwrite(
        dialect, "e.customer_id IN :customer_ids AND e.occurred_at >= :lo AND e.occurred_at < :hi"
    )
    return text(sql).bindparams(
        bindparam("customer_ids", expanding=True),
        bindparam("lo", type_=UTCDateTime()),
        bindparam("hi", type_=UTCDateTime()),
    )


def backfill_sql(dialect: str) -> str:
    """Rebuild every rollup of customers :lo <= id < :hi (the migration's resumable batches)."""
    return _overwrite(dialect, "e.customer_id >= :lo AND e.customer_id < :hi")


def day_span(moments: Iterable[dt.datetime]) -> tuple[dt.datetime, dt.datetime]:
    """[start of the first day, start of the day after the last) covering these instants."""
    days = [day_number(m) for m in moments]
    return day_start(min(days)), day_start(max(days) + 1)
