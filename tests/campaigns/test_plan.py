"""Campaign planning on real scored customers: ranking, budget arithmetic, save rates, CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.config import Settings
from tests.alerts.support import stored_run
from tests.alerts.test_rescore_cli import clv
from tests.scoring.support import AS_OF_INSTANT

T2 = AS_OF_INSTANT + dt.timedelta(days=45)


def states(settings: Settings) -> list[dict[str, Any]]:
    """Every customer's stored state, read straight from the table."""
    engine = create_engine(make_url(settings.database_url).set(drivername="postgresql+psycopg"))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.id, c.external_id, s.clv, s.churn_probability, s.lifecycle_stage, "
                "s.value_tier FROM customer_states s JOIN customers c ON c.id = s.customer_id"
            )
        ).mappings()
        out = [dict(r) for r in rows]
    engine.dispose()
    return out


def expected_plan(
    rows: list[dict[str, Any]], budget: float, cost: float, rate: Any
) -> list[tuple[str, float]]:
    """The plan by hand: gain per customer, best first, positive only, as many as the budget buys."""
    gains = sorted(
        (
            (-(r["churn_probability"] * rate(r) * r["clv"] - cost), r["id"], r["external_id"])
            for r in rows
        ),
    )
    positive = [(x, -g) for g, _, x in gains if -g > 0]
    return positive[: math.floor(budget / cost + 1e-9)]


async def test_plan_ranks_by_expected_net_gain_within_the_budget(
    demo: Settings, client: httpx.AsyncClient
) -> None:
    stored_run(demo, T2)
    rows = states(demo)
    assert len(rows) > 100

    # A budget that binds: 12 contacts at 2.50.
    body = {"budget": 31.0, "cost_per_contact": 2.5, "save_rate": 0.2}
    plan = (await client.post("/v1/campaigns/plan", json=body)).json()
    expected = expected_plan(rows, 31.0, 2.5, lambda _: 0.2)
    assert len(expected) == 12
    assert [c["customer_id"] for c in plan["contacts"]] == [x for x, _ in expected]
    assert [c["rank"] for c in plan["contacts"]] == list(range(1, 13))
    for contact, (_, gain) in zip(plan["contacts"], expected, strict=True):
        assert contact["expected_net_gain"] == round(gain, 2)
    totals = plan["totals"]
    assert totals["contacts"] == 12
    assert totals["spend"] == 30.0
    assert plan["contacts"][-1]["cumulative_spend"] == 30.0
    retained = sum(g + 2.5 for _, g in expected)
    assert abs(totals["expected_retained_revenue"] - retained) < 0.01
    assert abs(totals["expected_net_gain"] - (retained - 30.0)) < 0.01
    assert abs(totals["roi"] - (retained - 30.0) / 30.0) < 1e-3
    assert totals["stopped_by"] == "budget"

    # A budget that does not bind: the list stops where the gain turns negative.
    big = {"budget": 1e6, "cost_per_contact": 5.0, "save_rate": 0.1}
    plan = (await client.post("/v1/campaigns/plan", json=big)).json()
    expected = expected_plan(rows, 1e6, 5.0, lambda _: 0.1)
    assert 0 < len(expected) < len(rows)
    assert [c["customer_id"] for c in plan["contacts"]] == [x for x, _ in expected]
    assert plan["totals"]["stopped_by"] == "gain"
    assert all(c["expected_net_gain"] > 0 for c in plan["contacts"])

    # Save rates by stage win over the default; filters narrow the candidates.
    by_stage = {
        "budget": 100.0,
        "cost_per_contact": 1.0,
        "save_rate": 0.05,
        "save_rate_by_stage": {"at_risk": 0.3},
        "stages": ["at_risk", "active"],
    }
    plan = (await client.post("/v1/campaigns/plan", json=by_stage)).json()
    candidates = [r for r in rows if r["lifecycle_stage"] in ("at_risk", "active")]
    expected = expected_plan(
        candidates, 100.0, 1.0, lambda r: 0.3 if r["lifecycle_stage"] == "at_risk" else 0.05
    )
    assert [c["customer_id"] for c in plan["contacts"]] == [x for x, _ in expected]
    assert {c["save_rate"] for c in plan["contacts"] if c["lifecycle_stage"] == "at_risk"} <= {0.3}

    # Less than one contact's cost: nobody.
    none = {"budget": 0.5, "cost_per_contact": 1.0, "save_rate": 0.5}
    plan = (await client.post("/v1/campaigns/plan", json=none)).json()
    assert plan["totals"] == {
        "contacts": 0,
        "spend": 0.0,
        "expected_retained_revenue": 0.0,
        "expected_net_gain": 0.0,
        "roi": None,
        "stopped_by": "budget",
    }

    missing = await client.post("/v1/campaigns/plan", json={"budget": 1, "cost_per_contact": 1})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "save_rate"
    bad = await client.post(
        "/v1/campaigns/plan", json={"budget": 1, "cost_per_contact": 0, "save_rate": 0.1}
    )
    assert bad.status_code == 422

    # `clv plan` writes the same plan as CSV.
    out = clv(demo, "plan", "--budget", "31", "--cost", "2.5", "--save-rate", "0.2")
    table = list(csv.DictReader(io.StringIO(out)))
    expected = expected_plan(rows, 31.0, 2.5, lambda _: 0.2)
    assert [r["customer_id"] for r in table] == [x for x, _ in expected]
    assert [float(r["expected_net_gain"]) for r in table] == [round(g, 2) for _, g in expected]
