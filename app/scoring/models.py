"""Stored batch scores (written by `clv score --store`, read by the segments export)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, ForeignKey, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntKey, UTCDateTime


class ScoreRun(Base):
    """One `clv score --store` run: which model scored everyone as of when."""

    __tablename__ = "score_runs"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    model_version: Mapped[str] = mapped_column(String(64))
    customers: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())


class StoredScore(Base):
    """A customer's scores in one run."""

    __tablename__ = "scores"
    __table_args__ = (
        # The segments export: one stage of the latest run, by expected value at risk.
        Index(
            "ix_scores_run_id_lifecycle_stage_expected_value_at_risk",
            "run_id",
            "lifecycle_stage",
            "expected_value_at_risk",
            "customer_id",
        ),
        Index("ix_scores_customer_id", "customer_id"),
    )

    run_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    clv: Mapped[float] = mapped_column(Float)
    churn_probability: Mapped[float] = mapped_column(Float)
    lifecycle_stage: Mapped[str] = mapped_column(String(16))
    value_tier: Mapped[str] = mapped_column(String(8))
    expected_value_at_risk: Mapped[float] = mapped_column(Float)
