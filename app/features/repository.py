"""The one aggregate query behind every feature, for one customer, a list, or a range of ids.

Refunds move only the refund aggregates (count, cents): they are left out of every instant and
activity count (first/last event, last activity, active days), so a refund cannot make a
customer look more recent or more active than the orders and visits say.

The scope only changes which customers the query reads; the aggregate expressions are the same
text for the online and the offline callers (see `AGGREGATE_SQL`).

Over 400 lines: the one aggregate query and its dialect, scope and rollup variants are kept in
one module, so every feature has one definition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import asyncpg
import numpy as np
from sqlalchemy import BindParameter, Engine, Integer, TextClause, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Customer
from app.db import Reader, UTCDateTime
from app.features.definitions import (
    AGGREGATES,
    BEHAVIOUR_WINDOWS,
    FEATURE_NAMES,
    FEATURES,
    WINDOWS,
    ArrayOps,
    FloatOps,
    compute_features,
    compute_features_one,
    day_number,
    day_start,
    feature_columns,
)

Scope = Literal["one", "many", "range"]

# {day}, {cents}, {epoch_of} are per-dialect expressions; {events_scope} / {customers_scope}
# pick the customers. Everything else is shared, so online and offline cannot disagree.
AGGREGATE_SQL = """
WITH ev AS (
    SELECT e.customer_id, e.type, e.occurred_at,
           {day} AS day,
           CASE WHEN e.amount IS NULL THEN 0 ELSE {cents} END AS cents
    FROM events e
    WHERE e.occurred_at <= :as_of AND {events_scope}
),
daily AS (
    SELECT customer_id, day,
           COUNT(*) AS n_events,
           COUNT(*) FILTER (WHERE type <> 'refund') AS n_timed,
           COUNT(*) FILTER (WHERE type = 'refund') AS n_refunds,
           MIN(occurred_at) FILTER (WHERE type <> 'refund') AS first_at,
           MAX(occurred_at) FILTER (WHERE type <> 'refund') AS last_at,
           MAX(occurred_at) FILTER (WHERE type NOT IN ('order', 'refund')) AS last_activity_at,
           COUNT(*) FILTER (WHERE type = 'order') AS n_orders,
           MIN(occurred_at) FILTER (WHERE type = 'order') AS first_order_at,
           MAX(occurred_at) FILTER (WHERE type = 'order') AS last_order_at,
           COALESCE(SUM(cents) FILTER (WHERE type = 'order'), 0) AS order_cents,
           COALESCE(SUM(cents) FILTER (WHERE type = 'refund'), 0) AS refund_cents,
{window_sums}
           COALESCE(SUM(cents) FILTER (
               WHERE type = 'order' AND occurred_at > :t180 AND occurred_at <= :t90), 0)
               AS revenue_cents_prev90,
           COUNT(*) FILTER (WHERE type = 'add_to_cart') AS n_carts
    FROM ev
    GROUP BY customer_id, day
),
walked AS (
    SELECT d.*,
           MAX(CASE WHEN n_orders > 0 THEN day END) OVER (
               PARTITION BY customer_id ORDER BY day
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_order_day,
           MIN(CASE WHEN n_orders > 0 THEN day END) OVER (PARTITION BY customer_id) AS first_order_day,
           MAX(CASE WHEN n_orders > 0 THEN day END) OVER (PARTITION BY customer_id) AS last_order_day
    FROM daily d
),
per_customer AS (
    SELECT customer_id,
           SUM(n_events) AS n_events,
           SUM(CASE WHEN n_timed > 0 THEN 1 ELSE 0 END) AS active_days,
           SUM(n_refunds) AS n_refunds,
           {epoch_of_min_first_at} AS first_event_epoch,
           {epoch_of_max_last_at} AS last_event_epoch,
           {epoch_of_max_last_activity_at} AS last_activity_epoch,
           SUM(n_orders) AS n_orders,
           SUM(CASE WHEN n_orders > 0 THEN 1 ELSE 0 END) AS n_order_days,
           {epoch_of_min_first_order_at} AS first_order_epoch,
           {epoch_of_max_last_order_at} AS last_order_epoch,
           MAX(first_order_day) AS first_order_day,
           MAX(last_order_day) AS last_order_day,
           SUM(order_cents) AS gross_cents,
           SUM(refund_cents) AS refund_cents,
           SUM(CASE WHEN day = first_order_day THEN order_cents END) AS first_day_cents,
           SUM(CASE WHEN day = last_order_day THEN order_cents END) AS last_day_cents,
           MAX(CASE WHEN n_orders > 0 THEN order_cents END) AS max_day_cents,
           SUM(CASE WHEN n_orders > 0 AND prev_order_day IS NOT NULL
                    THEN (day - prev_order_day) * (day - prev_order_day) ELSE 0 END) AS gap_sumsq,
{window_totals}
           SUM(revenue_cents_prev90) AS revenue_cents_prev90,
           SUM(CASE WHEN orders_90 > 0 THEN 1 ELSE 0 END) AS order_days_90,
           SUM(CASE WHEN orders_180 - orders_90 > 0 THEN 1 ELSE 0 END) AS order_days_prev90,
           SUM(n_carts) AS n_carts
    FROM walked
    GROUP BY customer_id
)
SELECT c.external_id, c.id AS customer_pk, {aggregate_columns}
FROM customers c
{join} per_customer p ON p.customer_id = c.id
WHERE {customers_scope}
ORDER BY c.id
"""

_COUNTED = {
    **{f"orders_{n}": ("order", "1", f"t{n}") for n in WINDOWS},
    **{f"revenue_cents_{n}": ("order", "cents", f"t{n}") for n in WINDOWS},
    **{f"sessions_{n}": ("session", "1", f"t{n}") for n in BEHAVIOUR_WINDOWS},
    **{f"product_views_{n}": ("product_view", "1", f"t{n}") for n in BEHAVIOUR_WINDOWS},
    **{f"carts_{n}": ("add_to_cart", "1", f"t{n}") for n in BEHAVIOUR_WINDOWS},
}
# Conditional aggregates as FILTER clauses: the aggregate skips rows instead of adding zeros
# (a fifth less time on a customer with 10,000 events than SUM(CASE ...)).
_WINDOW_SUMS = "\n".join(
    f"           COUNT(*) FILTER (WHERE type = '{kind}' AND occurred_at > :{bound}) AS {name},"
    if value == "1"
    else f"           COALESCE(SUM({value}) FILTER (WHERE type = '{kind}' AND occurred_at > :{bound}), 0)"
    f" AS {name},"
    for name, (kind, value, bound) in _COUNTED.items()
)
_WINDOW_TOTALS = "\n".join(f"           SUM({name}) AS {name}," for name in _COUNTED)
_BOUNDS = sorted({bound for _, _, bound in _COUNTED.values()} | {"t90", "t180"})

DIALECT_EXPRESSIONS = {
    "postgresql": {
        "day": "((e.occurred_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01')",
        "cents": "(e.amount * 100)::bigint",
        # Exact microseconds (numeric), rounded once to a double: the same double the SQLite
        # expression below produces, so both backends give bit-identical features.
        "epoch": "EXTRACT(EPOCH FROM {})::float8",
    },
    # Instants are 'YYYY-MM-DD HH:MM:SS.ffffff' UTC text. julianday() rounds them to the
    # millisecond (23:59:59.9996 would be the next day), so days come from the date part alone
    # and epochs from exact integer microseconds, divided once: the double Postgres produces.
    "sqlite": {
        "day": "CAST(julianday(substr(e.occurred_at, 1, 10)) - 2440587.5 AS INTEGER)",
        "cents": "CAST(ROUND(e.amount * 100) AS INTEGER)",
        "epoch": "((CAST(strftime('%s', substr({0}, 1, 19)) AS INTEGER) * 1000000"
        " + CAST(substr({0}, 21, 6) AS INTEGER)) / 1000000.0)",
    },
}

_SCOPES: dict[Scope, tuple[str, str, str]] = {
    # (events filter, customers filter, join): "one"/"many" keep customers without history.
    "one": (
        "e.customer_id = (SELECT id FROM customers WHERE external_id = :external_id)",
        "c.external_id = :external_id",
        "LEFT JOIN",
    ),
    "many": (
        "e.customer_id IN (SELECT id FROM customers WHERE external_id IN :external_ids)",
        "c.external_id IN :external_ids",
        "LEFT JOIN",
    ),
    "range": ("e.customer_id >= :lo AND e.customer_id < :hi", "c.id >= :lo AND c.id < :hi", "JOIN"),
}
# On Postgres one array parameter keeps the statement text (and its prepared plan) constant.
_PG_MANY = (
    "e.customer_id IN (SELECT id FROM customers WHERE external_id = ANY(CAST(:external_ids AS text[])))",
    "c.external_id = ANY(CAST(:external_ids AS text[]))",
    "LEFT JOIN",
)


def _zero_default(name: str) -> str:
    # Counts and sums are 0 without events; instants and day numbers stay NULL (NaN). Every
    # aggregate leaves as a double: exact for these integers, and drivers decode it cheaply.
    if (
        name.endswith("_epoch")
        or name.endswith("_day")
        or name in ("first_day_cents", "last_day_cents", "max_day_cents")
    ):
        return f"CAST(p.{name} AS DOUBLE PRECISION)"
    return f"CAST(COALESCE(p.{name}, 0) AS DOUBLE PRECISION)"


# The online read: `AGGREGATE_SQL` with its `daily` step fed by `daily_rollups` for every whole
# day where each window bound puts a day entirely in or out, and by raw events only for the days
# that are partial: the as_of day (and any event after it that day is left out) and the four
# days holding a window bound (as_of - 30/90/180/365 days). Everything from `walked` on is the
# shared text, so a customer's vector is the same bit for bit (tests/features/test_rollups.py).
_RAW_DAILY, _SHARED_TAIL = AGGREGATE_SQL.split("walked AS (", 1)
_ROLLUP_VALUE = {
    ("order", "1"): "n_orders",
    ("order", "cents"): "order_cents",
    ("session", "1"): "n_sessions",
    ("product_view", "1"): "n_product_views",
    ("add_to_cart", "1"): "n_carts",
}
_BOUND_DAYS = tuple(int(bound[1:]) for bound in _BOUNDS)


# Postgres sums bigints into numeric; the raw days' sums are cast back to bigint (exact for
# integer cents) so the UNION below does not turn every rollup row's cents into numeric.
def _bigint_sums(sql: str) -> str:
    return re.sub(
        r"COALESCE\(SUM\((cents)\) FILTER \((.*?)\), 0\)",
        r"CAST(COALESCE(SUM(\1) FILTER (\2), 0) AS BIGINT)",
        sql,
        flags=re.S,
    )


_RAW_DAILY_BIGINT = _bigint_sums(_RAW_DAILY)
_ROLLUP_DAILY = (
    _RAW_DAILY_BIGINT.replace("daily AS (", "raw_daily AS (", 1)
    + """daily AS (
    SELECT * FROM raw_daily
    UNION ALL
    SELECT r.customer_id, r.day, r.n_events, r.n_timed, r.n_refunds, r.first_at, r.last_at,
           r.last_activity_at, r.n_orders, r.first_order_at, r.last_order_at, r.order_cents,
           r.refund_cents,
"""
    + "\n".join(
        f"           CASE WHEN r.day > :d{bound[1:]} THEN r.{_ROLLUP_VALUE[(kind, value)]} ELSE 0 END"
        f" AS {name},"
        for name, (kind, value, bound) in _COUNTED.items()
    )
    + """
           CASE WHEN r.day > :d180 AND r.day < :d90 THEN r.order_cents ELSE 0 END
               AS revenue_cents_prev90,
           r.n_carts
    FROM daily_rollups r
    WHERE {rollup_scope} AND r.day < :d0 AND r.day NOT IN ("""
    + ", ".join(f":d{n}" for n in _BOUND_DAYS)
    + """)
),
walked AS ("""
    + _SHARED_TAIL
)
# Raw events are read for the partial days only.
_PARTIAL_DAYS = " OR ".join(
    [
        "e.occurred_at >= :b0",
        *(f"(e.occurred_at >= :b{n} AND e.occurred_at < :e{n})" for n in _BOUND_DAYS),
    ]
)


@lru_cache(maxsize=16)
def aggregate_statement(dialect: str, scope: Scope, *, rollups: bool = False) -> TextClause:
    """The aggregate query for a dialect and a scope, with typed bind parameters.

    `rollups=True` reads whole days from `daily_rollups` (the online path); the result is the
    same as the raw-event query's for any as_of.
    """
    d = DIALECT_EXPRESSIONS[dialect]
    events_scope, customers_scope, join = (
        _PG_MANY if (scope, dialect) == ("many", "postgresql") else _SCOPES[scope]
    )
    template = AGGREGATE_SQL
    if rollups:
        template = _ROLLUP_DAILY.replace(
            "{rollup_scope}", events_scope.replace("e.customer_id", "r.customer_id")
        )
        events_scope = f"{events_scope} AND ({_PARTIAL_DAYS})"
    sql = template.format(
        day=d["day"],
        cents=d["cents"],
        window_sums=_bigint_sums(_WINDOW_SUMS) if rollups else _WINDOW_SUMS,
        window_totals=_WINDOW_TOTALS,
        epoch_of_min_first_at=d["epoch"].format("MIN(first_at)"),
        epoch_of_max_last_at=d["epoch"].format("MAX(last_at)"),
        epoch_of_max_last_activity_at=d["epoch"].format("MAX(last_activity_at)"),
        epoch_of_min_first_order_at=d["epoch"].format("MIN(first_order_at)"),
        epoch_of_max_last_order_at=d["epoch"].format("MAX(last_order_at)"),
        aggregate_columns=", ".join(f"{_zero_default(a)} AS {a}" for a in AGGREGATES),
        events_scope=events_scope,
        customers_scope=customers_scope,
        join=join,
    )
    params: list[BindParameter[Any]] = [bindparam("as_of", type_=UTCDateTime())]
    params += [bindparam(bound, type_=UTCDateTime()) for bound in _BOUNDS]
    if rollups:
        params += [bindparam(f"d{n}", type_=Integer()) for n in (0, *_BOUND_DAYS)]
        params += [bindparam(f"b{n}", type_=UTCDateTime()) for n in (0, *_BOUND_DAYS)]
        params += [bindparam(f"e{n}", type_=UTCDateTime()) for n in _BOUND_DAYS]
    if scope == "many" and dialect != "postgresql":
        params.append(bindparam("external_ids", expanding=True))
    return text(sql).bindparams(*params)


def time_params(as_of: dt.datetime) -> dict[str, dt.datetime]:
    """`as_of` and the window bounds the query compares against."""
    bounds = {f"t{n}": as_of - dt.timedelta(days=n) for n in (30, 90, 180, 365)}
    return {"as_of": as_of, **{k: v for k, v in bounds.items() if k in _BOUNDS}}


def rollup_params(as_of: dt.datetime) -> dict[str, Any]:
    """`time_params` plus the day numbers and day starts the rollup query splits on."""
    return {**time_params(as_of), **_day_params(day_number(as_of))}


@lru_cache(maxsize=4)
def _day_params(today: int) -> dict[str, Any]:
    """The day numbers and day starts of `rollup_params` (the same for a whole day: cached)."""
    params: dict[str, Any] = {"d0": today, "b0": day_start(today)}
    for n in _BOUND_DAYS:
        params[f"d{n}"] = today - n
        params[f"b{n}"] = day_start(today - n)
        params[f"e{n}"] = day_start(today - n + 1)
    return params


@dataclass(frozen=True)
class FeatureMatrix:
    """Feature vectors of several customers as of one instant; rows follow `customer_ids`."""

    as_of: dt.datetime
    customer_ids: list[str]
    values: np.ndarray  # (n, len(FEATURE_NAMES)) float64
    n_events: np.ndarray  # events each customer had by as_of (0 = known but no history)
    customer_pks: np.ndarray = field(
        default_factory=lambda: np.empty(0, dtype=np.int64)
    )  # internal ids

    def __len__(self) -> int:
        return len(self.customer_ids)

    def row(self, customer_id: str) -> dict[str, float]:
        """One customer's features by name."""
        i = self.customer_ids.index(customer_id)
        return dict(zip(FEATURE_NAMES, self.values[i].tolist(), strict=True))


def _matrix(rows: Sequence[Any], as_of: dt.datetime) -> FeatureMatrix:
    ids = [str(r[0]) for r in rows]
    pks = np.array([r[1] for r in rows], dtype=np.int64)
    # One conversion for the whole block (NULL -> NaN); the columns are views into it.
    block = np.array([tuple(r)[2:] for r in rows], dtype=np.float64).reshape(
        len(rows), len(AGGREGATES)
    )
    columns = {name: block[:, j] for j, name in enumerate(AGGREGATES)}
    values = compute_features(columns, as_of) if rows else np.empty((0, len(FEATURE_NAMES)))
    return FeatureMatrix(
        as_of=as_of, customer_ids=ids, values=values, n_events=columns["n_events"], customer_pks=pks
    )


class FeatureRepository:
    """Online feature reads: one statement, through any `app.db.Reader`."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        if isinstance(reader, asyncpg.Connection):
            self.dialect = "postgresql"
        else:
            bind = reader.get_bind() if isinstance(reader, AsyncSession) else reader
            self.dialect = bind.dialect.name

    async def for_customers(self, external_ids: Sequence[str], as_of: dt.datetime) -> FeatureMatrix:
        """Features of the given (existing) customers in one round trip; unknown ids are absent."""
        scope: Scope = "one" if len(external_ids) == 1 else "many"
        params: dict[str, Any] = rollup_params(as_of)
        if scope == "one":
            params["external_id"] = external_ids[0]
        else:
            params["external_ids"] = list(external_ids)
        if isinstance(self.reader, asyncpg.Connection):
            sql, order = asyncpg_statement(scope)
            rows: Sequence[Any] = await self.reader.fetch(sql, *(params[name] for name in order))
        else:
            rows = (
                await self.reader.execute(
                    aggregate_statement(self.dialect, scope, rollups=True), params
                )
            ).all()
        if len(rows) == 1:
            return _one_row(rows[0], as_of)
        return _matrix(rows, as_of)


def _one_row(row: Sequence[Any], as_of: dt.datetime) -> FeatureMatrix:
    """`_matrix` of a single row through `compute_features_one` (the same values, bit for bit)."""
    aggregates = tuple(row)[2:]
    n_events = aggregates[0]
    return FeatureMatrix(
        as_of=as_of,
        customer_ids=[str(row[0])],
        values=np.array([compute_features_one(aggregates, as_of)], dtype=np.float64),
        n_events=np.array([float("nan") if n_events is None else n_events], dtype=np.float64),
        customer_pks=np.array([row[1]], dtype=np.int64),
    )


@lru_cache(maxsize=4)
def asyncpg_statement(scope: Scope) -> tuple[str, tuple[str, ...]]:
    """The online (rollup) statement rendered for asyncpg ($n placeholders) and its parameter order."""
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    compiled = aggregate_statement("postgresql", scope, rollups=True).compile(dialect=dialect)
    assert compiled.positiontup is not None
    return str(compiled), tuple(compiled.positiontup)


#: Customers per offline range (single node and each Dask partition alike).
CHUNK_CUSTOMERS = 50_000


def id_ranges(engine: Engine, chunk_customers: int = CHUNK_CUSTOMERS) -> list[tuple[int, int]]:
    """[lo, hi) internal customer-id ranges covering every customer, `chunk_customers` ids each."""
    with engine.connect() as connection:
        bounds = connection.execute(select(func.min(Customer.id), func.max(Customer.id))).one()
    if bounds[0] is None:
        return []
    lo, top = int(bounds[0]), int(bounds[1])
    return [(start, start + chunk_customers) for start in range(lo, top + 1, chunk_customers)]


def range_features(engine: Engine, as_of: dt.datetime, lo: int, hi: int) -> FeatureMatrix:
    """Features of the customers with ids in [lo, hi) and an event by `as_of` (id order).

    The same statement as `offline_features`: a Dask worker runs it on its own range.
    """
    statement = aggregate_statement(engine.dialect.name, "range")
    with engine.connect() as connection:
        rows = connection.execute(statement, {**time_params(as_of), "lo": lo, "hi": hi}).all()
    if not rows:
        return FeatureMatrix(
            as_of, [], np.empty((0, len(FEATURE_NAMES))), np.empty(0), np.empty(0, dtype=np.int64)
        )
    return _matrix(rows, as_of)


def offline_features(
    engine: Engine, as_of: dt.datetime, chunk_customers: int = CHUNK_CUSTOMERS
) -> Iterator[FeatureMatrix]:
    """Features of every customer with an event by `as_of`, streamed in customer-id ranges."""
    statement = aggregate_statement(engine.dialect.name, "range")
    ranges = id_ranges(engine, chunk_customers)
    with engine.connect() as connection:
        for lo, hi in ranges:
            rows = connection.execute(statement, {**time_params(as_of), "lo": lo, "hi": hi}).all()
            if rows:
                yield _matrix(rows, as_of)


def offline_matrix(engine: Engine, as_of: dt.datetime) -> FeatureMatrix:
    """Features of every customer with an event by `as_of`, rows in external-id order.

    Training reads this: the row order (and so the model) cannot depend on internal ids or on
    the order the data was loaded in.
    """
    return in_external_id_order(as_of, list(offline_features(engine, as_of)))[0]


def in_external_id_order(
    as_of: dt.datetime, parts: Sequence[FeatureMatrix]
) -> tuple[FeatureMatrix, list[int]]:
    """Matrices of customer-id ranges as one, rows in external-id order, and the permutation
    applied (row i is row order[i] of the parts stacked), for anything aligned with them."""
    if not parts:
        empty = FeatureMatrix(as_of, [], np.empty((0, len(FEATURE_NAMES))), np.empty(0))
        return empty, []
    ids = [c for p in parts for c in p.customer_ids]
    order = sorted(range(len(ids)), key=ids.__getitem__)
    matrix = FeatureMatrix(
        as_of,
        [ids[i] for i in order],
        np.vstack([p.values for p in parts])[order],
        np.concatenate([p.n_events for p in parts])[order],
        np.concatenate([p.customer_pks for p in parts])[order],
    )
    return matrix, order


def as_mapping(matrix: FeatureMatrix, index: int) -> Mapping[str, float]:
    """Row `index` of a matrix as {feature name: value}."""
    return dict(zip(FEATURE_NAMES, matrix.values[index].tolist(), strict=True))


def fingerprint() -> str:
    """A hash of the feature definitions and of this SQL: artifacts built on other code are refused."""
    digest = hashlib.sha256()
    for feature in FEATURES:
        digest.update(f"{feature.name}|{feature.description}|{feature.unit}\n".encode())
    # The one definition of the arithmetic, and the two backends it runs on.
    for part in (feature_columns, ArrayOps, FloatOps, compute_features, compute_features_one):
        digest.update(inspect.getsource(part).encode())
    digest.update(AGGREGATE_SQL.encode())
    # The per-backend date and money expressions are part of the definition too.
    for dialect in sorted(DIALECT_EXPRESSIONS):
        for key, expression in sorted(DIALECT_EXPRESSIONS[dialect].items()):
            digest.update(f"{dialect}|{key}|{expression}\n".encode())
    return digest.hexdigest()[:16]
