"""Recording stored scores: compare with each customer's previous state, write the new state and
the alerts its changes emit, in the caller's transaction (the transactional outbox)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts import repository
from app.alerts.transitions import Snapshot, transitions
from app.config import Settings
from app.scoring.schemas import PredictionOut
from app.scoring.service import Score

#: What stored the scores: a single `score=true` event, a batch, `clv score --store`, `clv rescore`.
Source = Literal["event", "batch", "score_run", "rescore"]


@dataclass(frozen=True)
class Scored:
    """One customer's freshly stored scores, keyed by external id."""

    customer_id: str
    snapshot: Snapshot


@dataclass(frozen=True)
class Changes:
    """The rows one recording writes."""

    states: list[dict[str, Any]]
    alerts: list[dict[str, Any]]


def from_prediction(prediction: PredictionOut) -> Scored:
    """A stored-score record from an API prediction."""
    return Scored(
        prediction.customer_id,
        Snapshot(
            clv=prediction.clv.value,
            churn_probability=prediction.churn.probability,
            lifecycle_stage=prediction.segment.lifecycle_stage,
            value_tier=prediction.segment.value_tier,
            expected_value_at_risk=prediction.expected_value_at_risk,
            model_version=prediction.model_version,
            as_of=prediction.as_of,
        ),
    )


def plan_changes(
    current: Sequence[Any], scored: dict[str, Scored], settings: Settings, source: Source
) -> Changes:
    """State upserts and alert rows for locked rows `current` (customer pk, external id, state...).

    A score as of an earlier instant than the stored one (a backfill) changes nothing.
    """
    now = dt.datetime.now(dt.UTC)
    states: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for row in current:
        pk, external_id = row[0], row[1]
        record = scored.get(external_id)
        if record is None:
            continue
        before = None if row[2] is None else Snapshot(*row[2:9])
        after = record.snapshot
        if before is not None and after.as_of < before.as_of:
            continue
        states.append(
            {
                "customer_id": pk,
                "clv": after.clv,
                "churn_probability": after.churn_probability,
                "lifecycle_stage": after.lifecycle_stage,
                "value_tier": after.value_tier,
                "expected_value_at_risk": after.expected_value_at_risk,
                "model_version": after.model_version,
                "as_of": after.as_of,
                "scored_at": now,
            }
        )
        for kind, change in transitions(before, after, settings.alert_churn_threshold):
            assert before is not None
            alerts.append(
                {
                    "alert_id": f"msg_{uuid.uuid4().hex}",
                    "type": kind.value,
                    "customer_id": pk,
                    "occurred_at": now,
                    "data": {
                        "customer_id": external_id,
                        **change,
                        "model_version": after.model_version,
                        "expected_value_at_risk": after.expected_value_at_risk,
                        "before": before.document(),
                        "after": after.document(),
                        "source": source,
                    },
                }
            )
    return Changes(states, alerts)


async def record_predictions(
    session: AsyncSession,
    settings: Settings,
    predictions: Sequence[PredictionOut],
    source: Source,
) -> int:
    """Store these predictions as the customers' states and write their alerts; the session's
    transaction (the request's) commits both with whatever caused them. Returns alerts written."""
    if not predictions:
        return 0
    scored = {p.customer_id: from_prediction(p) for p in predictions}
    dialect = session.get_bind().dialect.name
    current = (
        await session.execute(repository.states_by_external_id_query(dialect, list(scored)))
    ).all()
    changes = plan_changes(current, scored, settings, source)
    if changes.states:
        await session.execute(repository.upsert_states_statement(dialect), changes.states)
    if changes.alerts:
        if (lock := repository.feed_order_lock_statement(dialect)) is not None:
            await session.execute(lock)
        await session.execute(repository.insert_alerts_statement(), changes.alerts)
    return len(changes.alerts)


def record_scores(
    connection: Connection,
    settings: Settings,
    customer_pks: Sequence[int],
    scored: Sequence[Scored],
    source: Source,
) -> int:
    """The same for a chunk of a batch run, on the chunk's own transaction. Returns alerts written."""
    if not scored:
        return 0
    dialect = connection.dialect.name
    by_id = {s.customer_id: s for s in scored}
    current = connection.execute(repository.states_by_pk_query(dialect, customer_pks)).all()
    changes = plan_changes(current, by_id, settings, source)
    if changes.states:
        connection.execute(repository.upsert_states_statement(dialect), changes.states)
    if changes.alerts:
        if (lock := repository.feed_order_lock_statement(dialect)) is not None:
            connection.execute(lock)
        connection.execute(repository.insert_alerts_statement(), changes.alerts)
    return len(changes.alerts)


#: Customers per state transaction of a batch run: their row locks last well under a second, so a
#: `score=true` for one of them waits that long at most.
RECORD_BATCH = 5_000


class ScoreRunRecorder:
    """The `on_stored` hook of a stored batch run: after each chunk of the run commits, records
    its scores as states and alerts, RECORD_BATCH customers per transaction (each state and its
    alerts commit together; a crash in between leaves the old states, so the next run emits the
    same changes)."""

    def __init__(
        self, settings: Settings, model_version: str, as_of: dt.datetime, source: Source
    ) -> None:
        self.settings = settings
        self.model_version = model_version
        self.as_of = as_of
        self.source: Source = source
        self.alerts = 0

    def __call__(self, engine: Engine, customer_pks: np.ndarray, scores: Sequence[Score]) -> None:
        scored = [
            Scored(
                s.customer_id,
                Snapshot(
                    clv=s.clv,
                    churn_probability=s.churn_probability,
                    lifecycle_stage=s.lifecycle_stage,
                    value_tier=s.value_tier,
                    expected_value_at_risk=s.expected_value_at_risk,
                    model_version=self.model_version,
                    as_of=self.as_of,
                ),
            )
            for s in scores
        ]
        pks = customer_pks.tolist()
        for start in range(0, len(scored), RECORD_BATCH):
            end = start + RECORD_BATCH
            with engine.begin() as connection:
                self.alerts += record_scores(
                    connection, self.settings, pks[start:end], scored[start:end], self.source
                )
