"""Alerts: transitions emit the right events once, atomically with the stored state; the feed."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import AlertType
from app.alerts.service import record_predictions
from app.alerts.transitions import Snapshot, transitions
from app.artifacts import current_directory
from app.config import Settings
from app.db import create_async_db_engine
from app.scoring.registry import LoadedModel, load_model
from app.scoring.service import PredictionService
from tests.alerts.support import alert_rows, count, expected_scores, stored_run
from tests.scoring.support import AS_OF_INSTANT

T1 = AS_OF_INSTANT  # the end of the demo history
T2 = T1 + dt.timedelta(days=45)  # nobody has bought since: some go quiet


def snap(stage: str, tier: str = "low", p: float = 0.2) -> Snapshot:
    return Snapshot(100.0, p, stage, tier, 100.0 * p, "v1", T1)


def test_transition_rules() -> None:
    assert transitions(None, snap("at_risk", p=0.9), 0.7) == []  # first state: a baseline
    assert transitions(snap("active"), snap("active"), 0.7) == []
    kinds = [k for k, _ in transitions(snap("active"), snap("at_risk", p=0.6), 0.7)]
    assert kinds == [AlertType.stage_changed, AlertType.at_risk]
    kinds = [k for k, _ in transitions(snap("at_risk"), snap("lapsed"), 0.7)]
    assert kinds == [AlertType.stage_changed]
    [(kind, change)] = transitions(snap("new", "low"), snap("new", "top"), 0.7)
    assert (kind, change) == (AlertType.value_tier_changed, {"from": "low", "to": "top"})
    [(kind, change)] = transitions(snap("active", p=0.69), snap("active", p=0.7), 0.7)
    assert kind == AlertType.churn_risk_rose
    assert change["threshold"] == 0.7
    assert transitions(snap("active", p=0.8), snap("active", p=0.9), 0.7) == []  # already above
    assert transitions(snap("active", p=0.9), snap("active", p=0.1), 0.7) == []  # fell


async def test_rescore_emits_at_risk_for_customers_who_went_quiet(demo: Settings) -> None:
    before, after = expected_scores(demo, T1), expected_scores(demo, T2)
    quiet = {
        c
        for c, s in after.items()
        if s.lifecycle_stage == "at_risk" and before[c].lifecycle_stage != "at_risk"
    }
    changed = {c for c, s in after.items() if s.lifecycle_stage != before[c].lifecycle_stage}
    assert quiet, "the fixture must have customers who go quiet between T1 and T2"

    assert stored_run(demo, T1) == 0  # the first run is the baseline
    assert alert_rows(demo) == []
    emitted = stored_run(demo, T2)

    rows = alert_rows(demo)
    assert emitted == len(rows)
    at_risk = [r["external_id"] for r in rows if r["type"] == AlertType.at_risk]
    assert sorted(at_risk) == sorted(quiet)  # each exactly once
    stage = [r for r in rows if r["type"] == AlertType.stage_changed]
    assert sorted(r["external_id"] for r in stage) == sorted(changed)
    for r in stage:
        c = r["external_id"]
        assert (r["data"]["from"], r["data"]["to"]) == (
            before[c].lifecycle_stage,
            after[c].lifecycle_stage,
        )
        assert r["data"]["before"]["churn_probability"] == before[c].churn_probability
        assert r["data"]["after"]["clv"] == after[c].clv
        assert r["data"]["expected_value_at_risk"] == after[c].expected_value_at_risk
        assert r["data"]["source"] == "rescore"
    tiers = {c for c, s in after.items() if s.value_tier != before[c].value_tier}
    assert {r["external_id"] for r in rows if r["type"] == AlertType.value_tier_changed} == tiers
    rose = {
        c
        for c, s in after.items()
        if before[c].churn_probability < demo.alert_churn_threshold <= s.churn_probability
    }
    assert {r["external_id"] for r in rows if r["type"] == AlertType.churn_risk_rose} == rose
    assert len({r["alert_id"] for r in rows}) == len(rows)

    # The same run again changes nothing, and a backfill (earlier as_of) is no change either.
    assert stored_run(demo, T2) == 0
    assert stored_run(demo, T1) == 0
    assert len(alert_rows(demo)) == len(rows)


async def test_score_true_emits_once_and_in_the_events_transaction(
    demo: Settings, client: httpx.AsyncClient
) -> None:
    stored_run(demo, T1)
    before = expected_scores(demo, T1)
    customer = next(c for c, s in sorted(before.items()) if s.lifecycle_stage == "active")
    view = {
        "event_id": f"view-{uuid.uuid4().hex}",
        "customer_id": customer,
        "type": "product_view",
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
    }

    response = await client.post("/v1/events", params={"score": "true"}, json=view)

    assert response.status_code == 201, response.text
    prediction = response.json()["prediction"]
    # Months after the last order: lapsed now.
    assert prediction["segment"]["lifecycle_stage"] == "lapsed"
    expected = {AlertType.stage_changed.value}
    if prediction["segment"]["value_tier"] != before[customer].value_tier:
        expected.add(AlertType.value_tier_changed.value)
    if before[customer].churn_probability < 0.7 <= prediction["churn"]["probability"]:
        expected.add(AlertType.churn_risk_rose.value)
    rows = alert_rows(demo)
    assert sorted(r["type"] for r in rows) == sorted(expected)
    [stage] = [r for r in rows if r["type"] == AlertType.stage_changed]
    assert stage["external_id"] == customer
    assert (stage["data"]["from"], stage["data"]["to"]) == ("active", "lapsed")
    assert stage["data"]["after"]["churn_probability"] == prediction["churn"]["probability"]
    assert stage["data"]["model_version"] == prediction["model_version"]
    assert stage["data"]["source"] == "event"

    # The same event again (a duplicate) and another one: the state is lapsed already.
    again = await client.post("/v1/events", params={"score": "true"}, json=view)
    assert again.status_code == 200
    other = {**view, "event_id": f"view-{uuid.uuid4().hex}"}
    batch = await client.post(
        "/v1/events/batch", params={"score": "true"}, json={"events": [other]}
    )
    assert batch.status_code == 200, batch.text
    assert len(alert_rows(demo)) == len(rows)


def model_and_customers(settings: Settings, n: int) -> tuple[LoadedModel, list[str]]:
    """The current model and the first `n` customers (by id) who are past prospect at T1."""
    directory = current_directory(settings.model_dir)
    assert directory is not None
    customers = sorted(
        c for c, s in expected_scores(settings, T1).items() if s.lifecycle_stage != "prospect"
    )
    return load_model(directory, threads=1), customers[:n]


async def test_a_rolled_back_transaction_emits_nothing(demo: Settings) -> None:
    stored_run(demo, T1)
    states = count(demo, "customer_states")
    model, customers = model_and_customers(demo, 20)
    engine = create_async_db_engine(demo)
    try:
        for outcome in ("rollback", "commit"):
            async with AsyncSession(engine) as session:
                predictions = await PredictionService(session, demo, model).many(customers, T2)
                written = await record_predictions(
                    session,
                    demo,
                    [r.prediction for r in predictions.results if r.prediction],
                    "batch",
                )
                assert written > 0  # T2 differs from T1 for these customers
                assert count(demo, "alerts") == 0  # not visible before commit
                if outcome == "rollback":
                    await session.rollback()
                    assert count(demo, "alerts") == 0
                    assert len(alert_rows(demo)) == 0
                else:
                    await session.commit()
                    assert count(demo, "alerts") == written
    finally:
        await engine.dispose()
    assert count(demo, "customer_states") == states


async def test_feed_pages_filters_and_cursor(demo: Settings, client: httpx.AsyncClient) -> None:
    stored_run(demo, T1)
    stored_run(demo, T2)
    rows = alert_rows(demo)
    assert len(rows) > 10

    seen: list[dict[str, object]] = []
    cursor: str | None = None
    for _ in range(100):
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/alerts", params=params)).json()
        assert len(page["items"]) <= 7
        if not page["items"]:
            assert page["next_cursor"] == cursor  # resume from here later
            break
        seen += page["items"]
        cursor = page["next_cursor"]
    assert [a["id"] for a in seen] == [r["alert_id"] for r in rows]
    assert [a["data"] for a in seen] == [r["data"] for r in rows]

    at_risk = (await client.get("/v1/alerts", params={"type": "customer.at_risk"})).json()
    assert [a["id"] for a in at_risk["items"]] == [
        r["alert_id"] for r in rows if r["type"] == "customer.at_risk"
    ]
    two = (
        await client.get(
            "/v1/alerts",
            params=[
                ("type", "customer.at_risk"),
                ("type", "customer.stage_changed"),
                ("limit", "1000"),
            ],
        )
    ).json()
    assert len(two["items"]) == sum(
        r["type"] in ("customer.at_risk", "customer.stage_changed") for r in rows
    )
    future = (await client.get("/v1/alerts", params={"since": "2999-01-01"})).json()
    assert future["items"] == []
    past = (await client.get("/v1/alerts", params={"since": "2000-01-01", "limit": "1000"})).json()
    assert len(past["items"]) == len(rows)

    bad = await client.get("/v1/alerts", params={"cursor": "abc"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "cursor"
    bad = await client.get("/v1/alerts", params={"type": "customer.happy"})
    assert bad.status_code == 422
    bad = await client.get("/v1/alerts", params={"since": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "since"


async def test_feed_cursor_never_skips_an_alert_whose_transaction_commits_late(
    demo: Settings, client: httpx.AsyncClient
) -> None:
    """Transaction A writes alerts and stays open; B writes alerts for other customers meanwhile.
    A reader polling the feed in between must not be handed a cursor past A's alerts: B's ids
    would be above A's, and A's would land behind the cursor. (B waits for A instead.)"""
    stored_run(demo, T1)
    model, customers = model_and_customers(demo, 40)
    engine = create_async_db_engine(demo)

    async def record(session: AsyncSession, ids: list[str]) -> int:
        predictions = await PredictionService(session, demo, model).many(ids, T2)
        return await record_predictions(
            session, demo, [r.prediction for r in predictions.results if r.prediction], "batch"
        )

    async def late_writer_waits_or_is_done(task: asyncio.Task[int], pid: int) -> str:
        async with engine.connect() as probe:
            for _ in range(600):
                if task.done():
                    return "done"
                waiting = (
                    await probe.execute(
                        text(
                            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :p"
                        ),
                        {"p": pid},
                    )
                ).scalar_one()
                if waiting:
                    return "waiting"
                await probe.rollback()
                await asyncio.sleep(0.05)
        raise AssertionError("the second writer neither finished nor waited")

    try:
        async with AsyncSession(engine) as first, AsyncSession(engine) as second:
            written_first = await record(first, customers[:20])
            assert written_first > 0  # T2 differs from T1 for these customers
            pid = (await second.execute(text("SELECT pg_backend_pid()"))).scalar_one()

            async def second_writer() -> int:
                written = await record(second, customers[20:])
                await second.commit()
                return written

            task = asyncio.ensure_future(second_writer())
            state = await late_writer_waits_or_is_done(task, pid)
            early = (await client.get("/v1/alerts", params={"limit": "1000"})).json()
            await first.commit()
            written_second = await task
            assert written_second > 0
    finally:
        await engine.dispose()
    cursor = early["next_cursor"]
    late = (
        await client.get(
            "/v1/alerts", params={"limit": "1000", **({"cursor": cursor} if cursor else {})}
        )
    ).json()
    rows = alert_rows(demo)
    assert len(rows) == written_first + written_second
    assert [a["id"] for a in early["items"] + late["items"]] == [r["alert_id"] for r in rows]
    assert state == "waiting"  # B drew no id while A was open...
    assert early["items"] == []  # ...and nothing was committed meanwhile
