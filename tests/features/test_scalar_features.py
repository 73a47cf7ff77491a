"""The one-customer feature path (Python floats) against `compute_features` (numpy), bit for bit."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from app.features.definitions import (
    AGGREGATES,
    FEATURE_NAMES,
    compute_features,
    compute_features_one,
)
from app.features.repository import _matrix, _one_row

AS_OF = dt.datetime(2026, 6, 30, 17, 45, 12, 345678, tzinfo=dt.UTC)
NOW = AS_OF.timestamp()
DAY = 86_400.0
TODAY = (AS_OF.date() - dt.date(1970, 1, 1)).days


def realistic(rng: np.random.Generator) -> list[float | None]:
    """Aggregates shaped like the SQL's: counts, cents, epochs and day numbers that fit together."""
    orders = int(rng.integers(0, 40))
    order_days = min(orders, int(rng.integers(1, 30))) if orders else 0
    first_seen = NOW - float(rng.uniform(0, 1500)) * DAY
    first_order = first_seen + float(rng.uniform(0, 1)) * (NOW - first_seen)
    last_order = first_order + float(rng.uniform(0, 1)) * (NOW - first_order)
    cents = float(rng.integers(0, 10**7))
    values: dict[str, float | None] = {name: float(rng.integers(0, 50)) for name in AGGREGATES}
    values.update(
        n_orders=float(orders),
        n_order_days=float(order_days),
        first_event_epoch=first_seen,
        last_event_epoch=max(last_order, first_seen),
        last_activity_epoch=None if rng.random() < 0.3 else float(rng.uniform(first_seen, NOW)),
        first_order_epoch=first_order if orders else None,
        last_order_epoch=last_order if orders else None,
        first_order_day=float(math.floor(first_order / DAY)) if orders else None,
        last_order_day=float(math.floor(last_order / DAY)) if orders else None,
        gross_cents=cents,
        refund_cents=float(rng.integers(0, int(cents) + 1)),
        first_day_cents=float(rng.integers(0, 10**5)) if orders else None,
        last_day_cents=float(rng.integers(0, 10**5)) if orders else None,
        max_day_cents=float(rng.integers(0, 10**6)) if orders else None,
        gap_sumsq=float(rng.integers(0, 10**6)),
    )
    return [values[name] for name in AGGREGATES]


def arbitrary(rng: np.random.Generator) -> list[float | None]:
    """Any doubles, NULLs, signed zeros and infinities anywhere: the two paths agree even there."""
    specials = [None, 0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, 1e308, 5e-324]
    row: list[float | None] = []
    for _ in AGGREGATES:
        pick = rng.random()
        if pick < 0.25:
            row.append(specials[int(rng.integers(0, len(specials)))])
        elif pick < 0.5:
            row.append(float(rng.integers(-3, 4)))
        else:
            row.append(float(rng.normal(0, 1e3)) * float(rng.choice([1.0, 1e6, NOW])))
    return row


def edge_cases() -> list[list[float | None]]:
    """Prospects, refund-only histories, a single order, NULL instants."""
    zero: dict[str, float | None] = dict.fromkeys(AGGREGATES, 0.0)
    for name in AGGREGATES:
        if name.endswith(("_epoch", "_day")) or name in (
            "first_day_cents",
            "last_day_cents",
            "max_day_cents",
        ):
            zero[name] = None
    visits_only = {**zero, "n_events": 3.0, "active_days": 2.0, "sessions_30": 2.0}
    visits_only.update(first_event_epoch=NOW - 40 * DAY, last_event_epoch=NOW - DAY)
    refund_only = {**zero, "n_events": 1.0, "n_refunds": 1.0, "refund_cents": 500.0}
    one_order = {
        **visits_only,
        "n_orders": 1.0,
        "n_order_days": 1.0,
        "first_order_epoch": NOW - 5 * DAY,
        "last_order_epoch": NOW - 5 * DAY,
        "first_order_day": float(TODAY - 5),
        "last_order_day": float(TODAY - 5),
        "gross_cents": 1999.0,
        "first_day_cents": 1999.0,
        "last_day_cents": 1999.0,
        "max_day_cents": 1999.0,
    }
    all_null: dict[str, float | None] = dict.fromkeys(AGGREGATES)
    cases = [zero, visits_only, refund_only, one_order, all_null]
    return [[case[name] for name in AGGREGATES] for case in cases]


def numpy_rows(rows: list[list[float | None]]) -> np.ndarray:
    block = np.array(rows, dtype=np.float64).reshape(len(rows), len(AGGREGATES))
    return compute_features({name: block[:, j] for j, name in enumerate(AGGREGATES)}, AS_OF)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy warns on inf - inf; Python does not
def test_scalar_features_are_bit_identical_to_the_numpy_ones() -> None:
    rng = np.random.default_rng(13)
    rows = (
        edge_cases() + [realistic(rng) for _ in range(3000)] + [arbitrary(rng) for _ in range(3000)]
    )
    # Many rows at once (numpy's vector loops, as offline) and each row alone (its scalar loops).
    together = numpy_rows(rows)
    for i, row in enumerate(rows):
        scalar = np.array(compute_features_one(row, AS_OF), dtype=np.float64)
        assert scalar.shape == (len(FEATURE_NAMES),)
        # Bytes, not ==: NaN must stay NaN and -0.0 must stay -0.0.
        assert scalar.tobytes() == together[i].tobytes(), (i, row)
        if i % 50 == 0:
            assert scalar.tobytes() == numpy_rows([row])[0].tobytes(), (i, row)
    # The realistic rows reach every branch: orders and none, gaps, NULL last activity.
    assert (together[:, FEATURE_NAMES.index("std_days_between_orders")] > 0).any()
    assert (together[:, FEATURE_NAMES.index("orders")] == 0).any()


def test_one_row_matrix_equals_the_numpy_matrix() -> None:
    rng = np.random.default_rng(5)
    for aggregates in edge_cases() + [realistic(rng) for _ in range(50)]:
        row = ("cust-1", 42, *aggregates)
        one, general = _one_row(row, AS_OF), _matrix([row], AS_OF)
        assert one.customer_ids == general.customer_ids == ["cust-1"]
        assert one.values.tobytes() == general.values.tobytes()
        assert one.values.shape == general.values.shape
        assert one.n_events.tobytes() == general.n_events.tobytes()
        assert one.customer_pks.tolist() == general.customer_pks.tolist() == [42]
        assert one.customer_pks.dtype == general.customer_pks.dtype
