"""The data-quality report finds each planted issue, exactly, on Postgres and SQLite, through the
API (admin scope), the CLI and the `clv train` summary."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader, EventColumns
from app.quality.service import summary_lines
from tests.conftest import api_key
from tests.factories import event
from tests.server import ROOT

NOW = dt.datetime.now(dt.UTC)
#: Today (a plain date means its end): the latest `as_of` the API accepts.
AS_OF = f"{NOW:%Y-%m-%d}"


def _planted() -> list[dict[str, Any]]:
    """Clean rows and one or two of every issue, all through the API."""
    t = "2026-01-10T12:00:{:02d}Z"
    return [
        # Clean: an order and a partial refund of it.
        event("order", customer_id="good", order_id="g1", amount="100.00", occurred_at=t.format(0)),
        event("refund", customer_id="good", order_id="g1", amount="30.00", occurred_at=t.format(1)),
        # A refund larger than its order (15 > 10).
        event("order", customer_id="over", order_id="v1", amount="10.00", occurred_at=t.format(2)),
        event("refund", customer_id="over", order_id="v1", amount="15.00", occurred_at=t.format(3)),
        # Orphan refunds: an order the service never saw, and no order id at all.
        event("refund", customer_id="orphan", order_id="x9", amount="9999.00"),
        event("refund", customer_id="orphan", order_id=..., amount="1.00"),
        # A free order.
        event("order", customer_id="zero", amount="0"),
        # Two orders of 20.00 in the same minute under different ids; a third a minute later.
        event("order", customer_id="dup", amount="20.00", occurred_at="2026-01-11T12:00:10Z"),
        event("order", customer_id="dup", amount="20.00", occurred_at="2026-01-11T12:00:50Z"),
        event("order", customer_id="dup", amount="20.00", occurred_at="2026-01-11T12:01:05Z"),
        # A first event six years before the rest.
        event("session", customer_id="early", occurred_at="2020-01-01T00:00:00Z"),
        event("order", customer_id="early", occurred_at="2026-01-01T00:00:00Z"),
        # An order without order_id.
        event("order", customer_id="noorder", order_id=...),
        # Will lose its customer row.
        event("session", customer_id="ghost"),
    ]


def _future_event(settings: Settings) -> None:
    """A bulk-loaded order dated a day ahead of its arrival (imports do not check the clock)."""
    micros = int(
        (NOW + dt.timedelta(days=1) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() * 1e6
    )
    engine = create_sync_engine(settings)
    BulkLoader(engine, settings.currency).load(
        EventColumns(
            event_id=np.array(["future-1"], dtype=object),
            customer_external_id=np.array(["future"], dtype=object),
            type=np.array(["order"], dtype=object),
            occurred_at_us=np.array([micros], dtype=np.int64),
            amount_cents=np.array([500], dtype=np.int64),
            order_id=np.array(["f1"], dtype=object),
        )
    )
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM customers WHERE external_id = 'ghost'"))
    engine.dispose()


async def _plant(client: httpx.AsyncClient, settings: Settings) -> list[dict[str, Any]]:
    items = _planted()
    answer = await client.post("/v1/events/batch", json={"events": items})
    assert answer.json()["created"] == len(items), answer.text
    assert (await client.put("/v1/customers/profile-only", json={})).status_code == 201
    _future_event(settings)
    return items


#: name: (count, population). Populations are the history as of today: the order dated tomorrow
#: is not part of it (one event, one order, one money event, one customer fewer), but it is
#: flagged as a future event because it was *received* by then.
EXPECTED = {  # name: (count, population)
    "orphan_refunds": (2, 4),
    "refunds_exceeding_order": (1, 2),
    "negative_net_revenue": (2, 7),  # orphan (0 - 10,000) and over (10 - 15): 10,005 in all
    "zero_amount_orders": (1, 8),
    "duplicate_orders": (1, 8),
    "early_events": (1, 5),  # customers with 2+ events: good, over, orphan, dup, early
    "future_events": (1, 14),
    "events_without_customer": (1, 14),
    # Every API event is dated long before today (the ghost's is gone with its customer).
    "late_events": (13, 14),
    "money_events_without_order_id": (2, 12),
    "customers_without_events": (1, 9),
}


def _check_counts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    checks = {c["name"]: c for c in report["checks"]}
    assert {n: (c["count"], c["population"]) for n, c in checks.items()} == EXPECTED
    assert report["events"] == 14
    return checks


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_every_planted_issue_is_counted_with_examples(
    backend: str,
    client: httpx.AsyncClient,
    sqlite_client: httpx.AsyncClient,
    settings: Settings,
    sqlite_settings: Settings,
) -> None:
    http, target = (client, settings) if backend == "postgres" else (sqlite_client, sqlite_settings)
    await _plant(http, target)
    answer = await http.get("/v1/data-quality", params={"as_of": AS_OF})
    assert answer.status_code == 200, answer.text
    checks = _check_counts(answer.json())

    orphans = checks["orphan_refunds"]
    assert orphans["amount"] == "10000.00"
    assert orphans["large"] is True
    assert {e["order_id"] for e in orphans["examples"]} == {"x9", None}
    over = checks["refunds_exceeding_order"]["examples"]
    assert (over[0]["order_id"], over[0]["amount"], over[0]["related_amount"]) == (
        "v1",
        "15.00",
        "10.00",
    )
    assert checks["refunds_exceeding_order"]["amount"] == "5.00"
    negative = checks["negative_net_revenue"]
    assert negative["amount"] == "10005.00"
    assert [e["customer_id"] for e in negative["examples"]] == ["orphan", "over"]
    dup = checks["duplicate_orders"]["examples"][0]
    assert dup["customer_id"] == "dup"
    assert dup["occurred_at"].startswith("2026-01-11T12:00:50")
    assert checks["early_events"]["examples"][0]["occurred_at"].startswith("2020-01-01")
    assert checks["future_events"]["examples"][0]["event_id"] == "future-1"
    assert checks["events_without_customer"]["examples"][0]["customer_id"] is None
    assert checks["customers_without_events"]["examples"][0]["customer_id"] == "profile-only"
    assert checks["late_events"]["large"] is False  # information, not a warning

    # As of before the 2026 events, only the 2020 session counts.
    early = (await http.get("/v1/data-quality", params={"as_of": "2025-12-31"})).json()
    assert early["events"] == 1
    assert all(
        c["count"] == 0
        for c in early["checks"]
        if c["name"] not in ("late_events", "customers_without_events")
    )


async def test_the_report_needs_the_admin_scope(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    key = api_key(settings.database_url, "events:write,predictions:read")
    answer = await client.get("/v1/data-quality", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 403
    assert "admin" in answer.json()["detail"]
    bad = await client.get("/v1/data-quality", params={"as_of": "yesterday"})
    assert bad.status_code == 422


def _clv(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={**os.environ, "CLV_DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_cli_prints_the_same_report_and_train_summarizes_it(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await _plant(client, settings)
    api = (await client.get("/v1/data-quality", params={"as_of": AS_OF})).json()
    as_json = _clv(settings, "data-quality", "--as-of", AS_OF, "--json")
    assert as_json.returncode == 0, as_json.stderr
    cli = json.loads(as_json.stdout)
    _check_counts(cli)
    assert cli["checks"] == api["checks"]
    plain = _clv(settings, "data-quality", "--as-of", AS_OF)
    assert plain.returncode == 0, plain.stderr
    assert "orphan_refunds" in plain.stdout
    assert "customer orphan" in plain.stdout

    engine = create_sync_engine(settings)
    lines = summary_lines(engine, dt.datetime.now(dt.UTC), settings)
    engine.dispose()
    assert lines[0].startswith(f"data quality as of {NOW:%Y-%m-%d}: ")
    warned = {line.split(":")[1].strip() for line in lines[1:]}
    assert warned == {
        n
        for n, (count, pop) in EXPECTED.items()
        if n not in ("late_events", "money_events_without_order_id", "customers_without_events")
    }
