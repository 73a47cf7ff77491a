"""Every per-customer feature, defined once, as of a timestamp.

Two layers, both shared by the online path (one customer, now) and the offline path (all
customers, as of a past date), so the two cannot drift apart:

1. `AGGREGATES`: exact per-customer aggregates of the events with `occurred_at <= as_of`
   (counts, integer cents, min/max instants, integer day gaps), computed by the one SQL
   query in `app.features.repository`. Exact types make the result independent of row order.
2. `compute_features()`: vectorised numpy arithmetic from those aggregates to the named
   features below. It runs on a 1-row array online and on a 50,000-row chunk offline.

Refunds move only `refunded_revenue`, `refunds`, `net_revenue` and `refund_rate`: they are not
"activity" (no recency, tenure or active-day feature sees them), so the CLV model's monotone
constraints on those four (see `app.training.fit`) make sure a refund can never raise CLV.

Days are UTC calendar days; "in the last N days" means `as_of - N days < occurred_at <= as_of`.
Every feature has a defined value for customers without orders (stated in `no_orders`).
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SECONDS_PER_DAY = 86_400.0
WINDOWS = (30, 90, 180, 365)
BEHAVIOUR_WINDOWS = (30, 90)


@dataclass(frozen=True)
class Feature:
    """A named model input with the words the API uses to explain it."""

    name: str
    description: str
    unit: str
    no_orders: str


def _f(name: str, description: str, unit: str, no_orders: str = "0") -> Feature:
    return Feature(name, description, unit, no_orders)


FEATURES: tuple[Feature, ...] = (
    _f("recency_days", "Days since the last order", "days", "days since first seen"),
    _f("tenure_days", "Days since the customer was first seen (any event)", "days", "as defined"),
    _f("order_age_days", "Days since the first order", "days"),
    _f("orders", "Number of orders", "orders"),
    _f("order_days", "Number of distinct days with an order", "days"),
    _f("repeat_order_days", "Order days after the first one", "days"),
    _f("gross_revenue", "Total of all orders", "currency"),
    _f("refunded_revenue", "Total refunded", "currency"),
    _f("refunds", "Number of refunds", "refunds"),
    _f("net_revenue", "Orders minus refunds", "currency"),
    _f("avg_order_value", "Average order value", "currency"),
    _f("avg_day_value", "Average spend per order day", "currency"),
    _f("first_order_value", "Spend on the first order day", "currency"),
    _f("last_order_value", "Spend on the most recent order day", "currency"),
    _f("max_day_value", "Largest spend on a single day", "currency"),
    *(_f(f"orders_{n}d", f"Orders in the last {n} days", "orders") for n in WINDOWS),
    *(_f(f"revenue_{n}d", f"Order revenue in the last {n} days", "currency") for n in WINDOWS),
    _f("mean_days_between_orders", "Average gap between order days (0 with fewer than 2)", "days"),
    _f("std_days_between_orders", "Spread (std) of the gaps between order days", "days"),
    _f("order_span_days", "Days between the first and the last order day", "days"),
    _f("active_days", "Distinct days with any activity", "days", "as defined"),
    _f("order_days_trend_90d", "Order days in the last 90 days minus the 90 before", "days"),
    _f("revenue_trend_90d", "Revenue in the last 90 days minus the 90 before", "currency"),
    _f("recency_share", "Recency as a share of the time since the first order", "ratio"),
    _f("spend_per_day", "Revenue per day since the first order", "currency/day"),
    _f("days_overdue", "Days since the last order beyond the usual gap", "days"),
    _f(
        "recency_gap_ratio",
        "Days since the last order in units of the usual gap (0 with fewer than 2 order days)",
        "ratio",
    ),
    _f(
        "order_days_per_year",
        "Order days per year since the first order (age floored at 30 days)",
        "days/year",
    ),
    *(
        _f(f"sessions_{n}d", f"Sessions in the last {n} days", "sessions", "as defined")
        for n in BEHAVIOUR_WINDOWS
    ),
    *(
        _f(f"product_views_{n}d", f"Product views in the last {n} days", "views", "as defined")
        for n in BEHAVIOUR_WINDOWS
    ),
    *(
        _f(f"carts_{n}d", f"Add-to-carts in the last {n} days", "carts", "as defined")
        for n in BEHAVIOUR_WINDOWS
    ),
    _f("cart_to_order_rate", "Orders per add-to-cart (0 without carts)", "ratio"),
    _f("refund_rate", "Share of order revenue refunded", "ratio"),
    _f(
        "days_since_last_activity",
        "Days since the last visit (session, view, cart...; else the last order)",
        "days",
        "as defined",
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

#: Aggregates the SQL returns per customer (NULL -> NaN where the customer has none).
AGGREGATES: tuple[str, ...] = (
    "n_events",
    "active_days",
    "n_refunds",
    "first_event_epoch",
    "last_event_epoch",
    "last_activity_epoch",
    "n_orders",
    "n_order_days",
    "first_order_epoch",
    "last_order_epoch",
    "first_order_day",
    "last_order_day",
    "gross_cents",
    "refund_cents",
    "first_day_cents",
    "last_day_cents",
    "max_day_cents",
    "gap_sumsq",
    *(f"orders_{n}" for n in WINDOWS),
    *(f"revenue_cents_{n}" for n in WINDOWS),
    "revenue_cents_prev90",
    "order_days_90",
    "order_days_prev90",
    *(f"sessions_{n}" for n in BEHAVIOUR_WINDOWS),
    *(f"product_views_{n}" for n in BEHAVIOUR_WINDOWS),
    *(f"carts_{n}" for n in BEHAVIOUR_WINDOWS),
    "n_carts",
)


def epoch_seconds(moment: dt.datetime) -> float:
    """Seconds since the Unix epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    return moment.timestamp()


class ArrayOps:
    """The operations `feature_columns` needs, on numpy arrays (every customer at once)."""

    where = staticmethod(np.where)
    maximum = staticmethod(np.maximum)
    nan_to_num = staticmethod(np.nan_to_num)
    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def present(x: Any) -> Any:
        return ~np.isnan(x)


class FloatOps:
    """The same operations on Python floats (one customer: the online hot path, where a one-row
    numpy matrix costs ~10x the CPU). Each gives numpy's result bit for bit: + - * / and sqrt are
    correctly rounded in both, `maximum` lets a NaN win and returns its second argument on a tie
    (-0.0 vs 0.0), `nan_to_num` maps NaN to 0 and +-inf to +-max (tests/features/
    test_scalar_features.py compares the two backends on edge cases and random rows)."""

    @staticmethod
    def where(condition: Any, x: Any, y: Any) -> Any:
        return x if condition else y

    @staticmethod
    def maximum(x: Any, y: Any) -> Any:
        return x if (x > y or x != x) else y

    @staticmethod
    def nan_to_num(x: Any) -> Any:
        if x != x:
            return 0.0
        if x in (math.inf, -math.inf):
            return math.copysign(sys.float_info.max, x)
        return x

    sqrt = staticmethod(math.sqrt)

    @staticmethod
    def present(x: Any) -> Any:
        return x == x


def feature_columns(a: Mapping[str, Any], now: float, ops: Any) -> dict[str, Any]:
    """THE definition of every feature: {name: value} from the SQL aggregates `a` as of `now`
    (epoch seconds). `ops` is ArrayOps (values are arrays, one entry per customer) or FloatOps
    (values are floats, one customer); the arithmetic is written once, for both."""
    has_orders = a["n_orders"] > 0
    # Refund-only histories have no timed event: every instant-based feature is 0 for them.
    timed = ops.present(a["first_event_epoch"])

    def days_since(epoch: Any) -> Any:
        return (now - epoch) / SECONDS_PER_DAY

    def ratio(num: Any, den: Any) -> Any:
        return ops.where(den > 0, num / ops.where(den > 0, den, 1.0), 0.0)

    tenure = ops.where(timed, days_since(ops.nan_to_num(a["first_event_epoch"])), 0.0)
    recency = ops.where(has_orders, days_since(a["last_order_epoch"]), tenure)
    order_age = ops.where(has_orders, days_since(a["first_order_epoch"]), 0.0)
    order_days = a["n_order_days"]
    span = ops.where(has_orders, a["last_order_day"] - a["first_order_day"], 0.0)
    gaps = ops.maximum(order_days - 1, 0.0)
    gap_mean = ratio(span, gaps)
    gap_var = ops.maximum(ratio(ops.nan_to_num(a["gap_sumsq"]), gaps) - gap_mean * gap_mean, 0.0)
    gross = a["gross_cents"] / 100
    refunded = a["refund_cents"] / 100
    last_activity = ops.where(
        ops.present(a["last_activity_epoch"]), a["last_activity_epoch"], a["last_event_epoch"]
    )
    return {
        "recency_days": recency,
        "tenure_days": tenure,
        "order_age_days": order_age,
        "orders": a["n_orders"],
        "order_days": order_days,
        "repeat_order_days": gaps,
        "gross_revenue": gross,
        "refunded_revenue": refunded,
        "refunds": a["n_refunds"],
        "net_revenue": gross - refunded,
        "avg_order_value": ratio(gross, a["n_orders"]),
        "avg_day_value": ratio(gross, order_days),
        "first_order_value": ops.nan_to_num(a["first_day_cents"]) / 100,
        "last_order_value": ops.nan_to_num(a["last_day_cents"]) / 100,
        "max_day_value": ops.nan_to_num(a["max_day_cents"]) / 100,
        **{f"orders_{w}d": a[f"orders_{w}"] for w in WINDOWS},
        **{f"revenue_{w}d": a[f"revenue_cents_{w}"] / 100 for w in WINDOWS},
        "mean_days_between_orders": gap_mean,
        "std_days_between_orders": ops.sqrt(gap_var),
        "order_span_days": span,
        "active_days": a["active_days"],
        "order_days_trend_90d": a["order_days_90"] - a["order_days_prev90"],
        "revenue_trend_90d": (a["revenue_cents_90"] - a["revenue_cents_prev90"]) / 100,
        "recency_share": ops.where(has_orders, recency / ops.maximum(order_age, 1.0), 0.0),
        "spend_per_day": gross / ops.maximum(order_age, 1.0),
        "days_overdue": ops.where(has_orders, recency - gap_mean, 0.0),
        "recency_gap_ratio": ops.where(gaps > 0, recency / ops.maximum(gap_mean, 1.0), 0.0),
        "order_days_per_year": 365.0 * order_days / ops.maximum(order_age, 30.0),
        **{f"sessions_{w}d": a[f"sessions_{w}"] for w in BEHAVIOUR_WINDOWS},
        **{f"product_views_{w}d": a[f"product_views_{w}"] for w in BEHAVIOUR_WINDOWS},
        **{f"carts_{w}d": a[f"carts_{w}"] for w in BEHAVIOUR_WINDOWS},
        "cart_to_order_rate": ratio(a["n_orders"], a["n_carts"]),
        "refund_rate": ratio(refunded, gross),
        "days_since_last_activity": ops.where(
            timed, days_since(ops.nan_to_num(last_activity)), 0.0
        ),
    }


def compute_features(agg: Mapping[str, np.ndarray], as_of: dt.datetime) -> np.ndarray:
    """Features (n customers x len(FEATURES), float64) from the SQL aggregates, as of `as_of`."""
    a = {k: np.asarray(agg[k], dtype=np.float64) for k in AGGREGATES}
    columns = feature_columns(a, epoch_seconds(as_of), ArrayOps)
    out = np.empty((len(a["n_events"]), len(FEATURES)), dtype=np.float64)
    for i, name in enumerate(FEATURE_NAMES):
        out[:, i] = columns[name]
    return out


def compute_features_one(agg: Sequence[float | None], as_of: dt.datetime) -> list[float]:
    """`compute_features` for one customer: the same `feature_columns` on Python floats.

    `agg` holds the `AGGREGATES` values in order (None = NULL, as NaN in the numpy path).
    """
    a = {k: _NAN if v is None else float(v) for k, v in zip(AGGREGATES, agg, strict=True)}
    columns = feature_columns(a, epoch_seconds(as_of), FloatOps)
    return [float(columns[name]) for name in FEATURE_NAMES]


_NAN = float("nan")


def end_of_day(day: dt.date) -> dt.datetime:
    """The last microsecond of a UTC calendar day: `as_of` for "up to and including that day"."""
    return dt.datetime.combine(day, dt.time.max, tzinfo=dt.UTC)


def parse_as_of(value: str) -> dt.datetime:
    """An RFC 3339 instant with offset, or a YYYY-MM-DD date meaning the end of that UTC day."""
    text = value.strip()
    if len(text) == 10:
        return end_of_day(dt.date.fromisoformat(text))
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("as_of needs an explicit offset (Z or +hh:mm), or a plain YYYY-MM-DD date")
    return moment.astimezone(dt.UTC)


#: Day numbers count UTC days since this instant (the SQL `day` expression's origin).
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def day_number(moment: dt.datetime) -> int:
    """The UTC day number since 1970-01-01 of an instant (what the SQL `day` expression gives)."""
    return (moment.astimezone(dt.UTC).date() - EPOCH.date()).days


def day_start(day: int) -> dt.datetime:
    """The first instant of a day number."""
    return EPOCH + dt.timedelta(days=day)
