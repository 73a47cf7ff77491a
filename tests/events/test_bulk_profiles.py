"""A bulk chunk of customer profiles with no events (a profiles-only import chunk) loads on
both backends: the customers are created once, nothing else is written."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader, CustomerColumns, EventColumns


def _no_events() -> EventColumns:
    return EventColumns(
        event_id=np.array([], dtype=object),
        customer_external_id=np.array([], dtype=object),
        type=np.array([], dtype=object),
        occurred_at_us=np.array([], dtype=np.int64),
        amount_cents=np.array([], dtype=np.int64),
        order_id=np.array([], dtype=object),
    )


def _profiles(n: int) -> CustomerColumns:
    return CustomerColumns(
        external_id=np.array([f"profile-{k}" for k in range(n)], dtype=object),
        signup_at_us=np.array([1_750_000_000_000_000 + k for k in range(n)], dtype=np.int64),
        country=np.array(["DE"] * n, dtype=object),
        acquisition_channel=np.array(["ads"] * n, dtype=object),
    )


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_profiles_without_events_load_once(
    backend: str, settings: Settings, sqlite_settings: Settings
) -> None:
    engine = create_sync_engine(settings if backend == "postgres" else sqlite_settings)
    try:
        loader = BulkLoader(engine, "EUR")
        first = loader.load(_no_events(), _profiles(3))
        again = loader.load(_no_events(), _profiles(3))
        with engine.connect() as connection:
            customers = connection.execute(
                text("SELECT external_id, country FROM customers ORDER BY external_id")
            ).all()
            events = connection.execute(text("SELECT count(*) FROM events")).scalar_one()
    finally:
        engine.dispose()
    assert (first.customers_created, first.events_created) == (3, 0)
    assert (again.customers_created, again.events_created) == (0, 0)
    assert [tuple(c) for c in customers] == [(f"profile-{k}", "DE") for k in range(3)]
    assert events == 0
