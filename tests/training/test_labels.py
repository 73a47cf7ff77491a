"""Label windows: (cutoff, cutoff + horizon], refunds net out, floored at zero."""

from __future__ import annotations

import datetime as dt

import httpx
import numpy as np
import pytest

from app.config import Settings
from app.db import create_sync_engine
from app.training.repository import window_labels
from app.training.train import holdout_mask, validation_mask
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
