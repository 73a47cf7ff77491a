"""A bulk load (`clv import-transactions`, `clv generate-demo`) racing an erasure of the same
customer lands wholly before or wholly after it: no event outlives its customer row."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import numpy as np
import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader, EventColumns
from tests.conftest import app_client

ROUNDS = 25
EVENTS = 20_000


def _columns(customer: str, tag: str) -> EventColumns:
    n = np.arange(EVENTS)
    return EventColumns(
        event_id=np.array([f"{tag}-{k}" for k in n], dtype=object),
        customer_external_id=np.array([customer] * EVENTS, dtype=object),
        type=np.array(["page_view"] * EVENTS, dtype=object),
        occurred_at_us=(1_750_000_000_000_000 + n * 1_000_000).astype(np.int64),
        amount_cents=np.full(EVENTS, -1, dtype=np.int64),
        order_id=np.array([""] * EVENTS, dtype=object),
    )


def _count(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql), params).scalar_one())


@pytest.mark.slow
async def test_a_bulk_load_racing_an_erasure_lands_wholly_before_or_after_it(
    settings: Settings,
) -> None:
    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, "USD")
    rng = random.Random(14)
    outcomes: list[str] = []
    async with app_client(settings) as client:
        started = time.perf_counter()
        loader.load(_columns("warmup", f"warm-{uuid.uuid4().hex[:6]}"))
        window = time.perf_counter() - started  # how long one load takes here

        async def after(delay: float, work: object) -> object:
            await asyncio.sleep(max(delay, 0.0))
            return await work  # type: ignore[misc]

        for round_ in range(ROUNDS):
            customer = f"bulk-race-{round_}"
            assert (await client.put(f"/v1/customers/{customer}", json={})).status_code == 201
            tag = f"bulkrace{round_}"
            offset = rng.uniform(-0.3, 1.0) * window
            loaded, erased = await asyncio.gather(
                after(-offset, asyncio.to_thread(loader.load, _columns(customer, tag))),
                after(offset, client.delete(f"/v1/customers/{customer}")),
            )
            assert erased.status_code == 200, erased.text  # type: ignore[attr-defined]
            assert loaded.events_created == EVENTS  # type: ignore[attr-defined]
            deleted = erased.json()["deleted"]["events"]  # type: ignore[attr-defined]
            remaining = _count(
                engine,
                "SELECT count(*) FROM events e JOIN customers c ON c.id = e.customer_id "
                "WHERE e.event_id LIKE :p AND c.external_id = :c",
                p=f"{tag}-%",
                c=customer,
            )
            stored = _count(
                engine, "SELECT count(*) FROM events WHERE event_id LIKE :p", p=f"{tag}-%"
            )
            # Never half: all erased (load first) or all kept under a re-created customer.
            assert (deleted, remaining) in ((EVENTS, 0), (0, EVENTS)), (round_, deleted, remaining)
            assert stored == remaining, (round_, stored - remaining, "events without a customer")
            outcomes.append("load first" if deleted else "erasure first")
    orphans = _count(
        engine,
        "SELECT count(*) FROM events e "
        "WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = e.customer_id)",
    )
    engine.dispose()
    assert orphans == 0  # no event outlived its customer row
    # Both orders happened, so both paths (wait for the load; re-create the customer) ran.
    assert set(outcomes) == {"load first", "erasure first"}
