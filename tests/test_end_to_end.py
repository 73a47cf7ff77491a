"""The service as a real uvicorn process over loopback, on Postgres."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from app.config import Settings
from app.db import sync_url
from app.events.models import Event
from tests.conftest import bearer, create_database, drop_database
from tests.factories import event
from tests.server import ROOT, running_server, server_env

pytestmark = pytest.mark.slow


def test_post_an_order_and_read_it_back(settings: Settings) -> None:
    with running_server(server_env(settings, auth=True)) as base:
        http = httpx.Client(base_url=base, headers=bearer(settings.database_url))
        order = event("order", customer_id="e2e-1", amount="42.00")
        assert httpx.post(f"{base}/v1/events", json=order).status_code == 401  # no key, no entry
        created = http.post("/v1/events", json=order)
        assert created.status_code == 201, created.text
        customer = http.get("/v1/customers/e2e-1").json()
        assert customer["summary"]["net_revenue"] == "42.00"
        events = http.get("/v1/customers/e2e-1/events").json()["items"]
        assert [e["event_id"] for e in events] == [order["event_id"]]
        docs = httpx.get(f"{base}/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        spec = httpx.get(f"{base}/openapi.json").json()
        assert "/v1/events/batch" in spec["paths"]
        assert httpx.get(f"{base}/readyz").json()["ready"] is True


def test_serve_refuses_an_unmigrated_database() -> None:
    url = create_database("clv_unmigrated")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve", "--port", "1"],
            cwd=ROOT,
            env={**os.environ, "CLV_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        drop_database(url)
    assert result.returncode == 2
    assert "clv migrate" in result.stderr


def test_concurrent_overlapping_batches_store_each_distinct_event_exactly_once(
    settings: Settings,
) -> None:
    """8 clients post overlapping batches (>= 20,000 events in all) at the same time."""
    distinct = [
        event("order" if i % 5 == 0 else "page_view", customer_id=f"cc-{i % 900}")
        for i in range(12_000)
    ]
    rng = random.Random(42)
    # Each client sends a random 2,500-event sample (so ids overlap across clients), shuffled.
    plans = [rng.sample(distinct, 2_500) for _ in range(8)]
    assert sum(len(p) for p in plans) >= 20_000
    # Make sure every distinct event is sent at least once.
    sent = {e["event_id"] for plan in plans for e in plan}
    leftovers = [e for e in distinct if e["event_id"] not in sent]
    plans[0].extend(leftovers)

    headers = bearer(settings.database_url, "events:write")

    async def client(base: str, plan: list[dict[str, object]]) -> list[str]:
        statuses = []
        async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as http:
            for start in range(0, len(plan), 500):
                response = await http.post(
                    "/v1/events/batch", json={"events": plan[start : start + 500]}
                )
                assert response.status_code == 200, response.text
                statuses += [r["status"] for r in response.json()["results"]]
        return statuses

    async def run(base: str) -> list[list[str]]:
        return await asyncio.gather(*(client(base, plan) for plan in plans))

    with running_server(server_env(settings, auth=True), "--workers", "2") as base:
        results = asyncio.run(run(base))

    flat = [s for r in results for s in r]
    assert "rejected" not in flat
    assert flat.count("created") == len(distinct)  # each distinct event created exactly once
    engine = create_engine(sync_url(settings.database_url))
    with engine.connect() as connection:
        stored = connection.execute(
            select(func.count(), func.count(func.distinct(Event.event_id)))
        ).one()
    engine.dispose()
    assert tuple(stored) == (len(distinct), len(distinct))
