"""SQL for stored batch scores: writing a run, reading a segment of the latest run."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, delete, desc, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Customer
from app.scoring.models import ScoreRun, StoredScore
from app.scoring.scores import Score

KEEP_RUNS = 3


def count_customers(connection: Connection) -> int:
    """How many customers exist (the size a scoring run's progress bar counts to)."""
    return int(connection.execute(select(func.count()).select_from(Customer)).scalar_one())


def start_run(connection: Connection, as_of: object, model_version: str) -> int:
    """A new score run row; its id tags every score written for it."""
    result = connection.execute(
        insert(ScoreRun)
        .values(as_of=as_of, model_version=model_version, customers=0)
        .returning(ScoreRun.id)
    )
    return int(result.scalar_one())


def write_scores(
    connection: Connection, run_id: int, customer_pks: np.ndarray, scores: Sequence[Score]
) -> int:
    """Append one chunk of a run's scores; returns the rows written.

    Rows are inserted through a join with `customers ... FOR KEY SHARE`: a customer erased
    meanwhile is skipped, and an erasure arriving later waits for this chunk's commit and then
    deletes its scores too, so no score outlives its customer. Commit each chunk promptly.
    """
    if connection.dialect.name == "postgresql":
        buffer = io.StringIO()
        for pk, s in zip(customer_pks.tolist(), scores, strict=True):
            buffer.write(
                f"{pk}\t{s.clv!r}\t{s.churn_probability!r}\t{s.lifecycle_stage}\t"
                f"{s.value_tier}\t{s.expected_value_at_risk!r}\n"
            )
        raw = connection.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(_STAGE_SCORES)
            with cursor.copy(
                "COPY stage_scores (customer_id, clv, churn_probability, lifecycle_stage, "
                "value_tier, expected_value_at_risk) FROM STDIN"
            ) as copy:
                copy.write(buffer.getvalue())
            cursor.execute(_PG_INSERT_SCORES, {"run_id": run_id})
            return max(int(cursor.rowcount), 0)
    # SQLite has one writer at a time: an erasure cannot interleave with this transaction.
    rows = [
        {
            "run_id": run_id,
            "customer_id": pk,
            "clv": s.clv,
            "churn_probability": s.churn_probability,
            "lifecycle_stage": s.lifecycle_stage,
            "value_tier": s.value_tier,
            "expected_value_at_risk": s.expected_value_at_risk,
        }
        for pk, s in zip(customer_pks.tolist(), scores, strict=True)
    ]
    if rows:
        connection.execute(insert(StoredScore), rows)
    return len(rows)


_STAGE_SCORES = """
CREATE TEMP TABLE IF NOT EXISTS stage_scores (
    customer_id bigint, clv float8, churn_probability float8, lifecycle_stage text,
    value_tier text, expected_value_at_risk float8
) ON COMMIT DELETE ROWS
"""
_PG_INSERT_SCORES = """
INSERT INTO scores (run_id, customer_id, clv, churn_probability, lifecycle_stage, value_tier,
                    expected_value_at_risk)
SELECT %(run_id)s, s.customer_id, s.clv, s.churn_probability, s.lifecycle_stage, s.value_tier,
       s.expected_value_at_risk
FROM stage_scores s JOIN customers c ON c.id = s.customer_id
FOR KEY SHARE OF c
"""


def finish_run(connection: Connection, run_id: int, customers: int) -> None:
    """Record the run's size and drop runs older than the last KEEP_RUNS."""
    from sqlalchemy import update

    connection.execute(update(ScoreRun).where(ScoreRun.id == run_id).values(customers=customers))
    keep = select(ScoreRun.id).order_by(desc(ScoreRun.id)).limit(KEEP_RUNS).scalar_subquery()
    old = [r for (r,) in connection.execute(select(ScoreRun.id).where(ScoreRun.id.not_in(keep)))]
    if old:
        connection.execute(delete(StoredScore).where(StoredScore.run_id.in_(old)))
        connection.execute(delete(ScoreRun).where(ScoreRun.id.in_(old)))


@dataclass(frozen=True)
class SegmentRow:
    """One customer of a segment export."""

    customer_id: str
    customer_pk: int
    clv: float
    churn_probability: float
    lifecycle_stage: str
    value_tier: str
    expected_value_at_risk: float


class ScoreRepository:
    """Reads stored scores through the request's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def latest_run(self) -> ScoreRun | None:
        """The newest complete run (None before the first `clv score --store`)."""
        query = select(ScoreRun).where(ScoreRun.customers > 0).order_by(desc(ScoreRun.id)).limit(1)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def segment(
        self, run_id: int, stage: str, tier: str | None, limit: int, after: tuple[float, int] | None
    ) -> list[SegmentRow]:
        """A page of one lifecycle stage, highest expected value at risk first."""
        query = (
            select(
                Customer.external_id,
                StoredScore.customer_id,
                StoredScore.clv,
                StoredScore.churn_probability,
                StoredScore.lifecycle_stage,
                StoredScore.value_tier,
                StoredScore.expected_value_at_risk,
            )
            .join(Customer, Customer.id == StoredScore.customer_id)
            .where(StoredScore.run_id == run_id, StoredScore.lifecycle_stage == stage)
        )
        if tier is not None:
            query = query.where(StoredScore.value_tier == tier)
        if after is not None:
            value, pk = after
            query = query.where(
                (StoredScore.expected_value_at_risk < value)
                | ((StoredScore.expected_value_at_risk == value) & (StoredScore.customer_id < pk))
            )
        query = query.order_by(
            desc(StoredScore.expected_value_at_risk), desc(StoredScore.customer_id)
        ).limit(limit)
        return [SegmentRow(*row) for row in await self.session.execute(query)]
