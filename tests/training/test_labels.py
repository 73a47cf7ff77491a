"""Label windows: (cutoff, cutoff + horizon], refunds net out, floored at zero."""

from __future__ import annotations

import datetime as dt

import httpx
import numpy as np
import pytest

from app.config import Settings
from app.db import create_sync_engine
from app.training.dataset import holdout_mask, validation_mask
from app.training.repository import window_labels
from tests.factories import event

CUTOFF = dt.datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)


async def test_window_bounds_refunds_and_floor(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    events = [
        event(
            "order", customer_id="a", occurred_at="2026-01-31T23:59:59Z", amount="500.00"
        ),  # before: ignored
        event(
            "order", customer_id="a", occurred_at="2026-02-01T00:00:00Z", amount="100.00"
        ),  # first instant in
        event("refund", customer_id="a", occurred_at="2026-02-15T00:00:00Z", amount="30.00"),
        event(
            "order", customer_id="a", occurred_at="2026-03-02T23:59:59Z", amount="10.00"
        ),  # last day in (30 d)
        event(
            "order", customer_id="a", occurred_at="2026-03-03T00:00:00Z", amount="999.00"
        ),  # after: ignored
        event(
            "refund", customer_id="b", occurred_at="2026-02-10T00:00:00Z", amount="80.00"
        ),  # net < 0 -> 0
        event("session", customer_id="c", occurred_at="2026-02-10T00:00:00Z"),
    ]
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["rejected"] == 0
    engine = create_sync_engine(settings)
    net, orders = window_labels(engine, CUTOFF, 30, ["a", "b", "c", "unknown"])
    engine.dispose()
    np.testing.assert_array_equal(net, [80.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(orders, [2, 0, 0, 0])


def test_protocol_a_split_is_the_documented_hash() -> None:
    import hashlib

    ids = [f"{i:05d}" for i in range(1, 2001)]
    mask = holdout_mask(ids, 0.2, "protocol-a")
    expected = [int(hashlib.sha256(i.encode()).hexdigest(), 16) % 2 == 1 for i in ids]
    assert mask.tolist() == expected
    assert 0.45 < mask.mean() < 0.55


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_hash_split_is_stable_and_sized(fraction: float) -> None:
    ids = [f"cust-{i}" for i in range(20_000)]
    mask = holdout_mask(ids, fraction, "hash")
    assert abs(mask.mean() - fraction) < 0.02
    assert holdout_mask(list(reversed(ids)), fraction, "hash").tolist() == list(
        reversed(mask.tolist())
    )
    validation = validation_mask(ids, 0.15, seed=0)
    # The validation slice is independent of the holdout hash.
    assert abs(validation[mask].mean() - validation[~mask].mean()) < 0.03


async def test_refunds_are_matched_to_their_orders(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Issue 10: a refund of a pre-cutoff order does not eat the post-cutoff label."""
    events = [
        # a: $100 before the cutoff, refunded after it, plus a new $40 order -> 40 (was 0).
        event(
            "order",
            customer_id="a",
            occurred_at="2026-01-20T10:00:00Z",
            amount="100.00",
            order_id="a-1",
        ),
        event(
            "refund",
            customer_id="a",
            occurred_at="2026-02-03T10:00:00Z",
            amount="100.00",
            order_id="a-1",
        ),
        event(
            "order",
            customer_id="a",
            occurred_at="2026-02-10T10:00:00Z",
            amount="40.00",
            order_id="a-2",
        ),
        # b: an order inside the window, partly refunded inside it -> 60 - 25.
        event(
            "order",
            customer_id="b",
            occurred_at="2026-02-05T10:00:00Z",
            amount="60.00",
            order_id="b-1",
        ),
        event(
            "refund",
            customer_id="b",
            occurred_at="2026-02-08T10:00:00Z",
            amount="25.00",
            order_id="b-1",
        ),
        # c: orphan refund (unknown order id) whose latest earlier order predates the cutoff -> ignored.
        event(
            "order",
            customer_id="c",
            occurred_at="2026-01-25T10:00:00Z",
            amount="70.00",
            order_id="c-1",
        ),
        event(
            "refund",
            customer_id="c",
            occurred_at="2026-02-02T10:00:00Z",
            amount="70.00",
            order_id="zz",
        ),
        event(
            "order",
            customer_id="c",
            occurred_at="2026-02-20T10:00:00Z",
            amount="30.00",
            order_id="c-2",
        ),
        # d: orphan refund after an order inside the window -> counts against it.
        event(
            "order",
            customer_id="d",
            occurred_at="2026-02-04T10:00:00Z",
            amount="50.00",
            order_id="d-1",
        ),
        event(
            "refund",
            customer_id="d",
            occurred_at="2026-02-06T10:00:00Z",
            amount="20.00",
            order_id=...,
        ),
        # e: orphan refund without any earlier order -> nothing to refund, ignored.
        event(
            "refund",
            customer_id="e",
            occurred_at="2026-02-06T10:00:00Z",
            amount="20.00",
            order_id=...,
        ),
        event(
            "order",
            customer_id="e",
            occurred_at="2026-02-07T10:00:00Z",
            amount="15.00",
            order_id="e-1",
        ),
    ]
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["rejected"] == 0
    engine = create_sync_engine(settings)
    net, orders = window_labels(engine, CUTOFF, 30, ["a", "b", "c", "d", "e"])
    engine.dispose()
    np.testing.assert_array_equal(net, [40.0, 35.0, 30.0, 30.0, 15.0])
    np.testing.assert_array_equal(orders, [1, 1, 1, 1, 1])
