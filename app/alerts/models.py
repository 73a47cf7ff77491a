"""Each customer's last stored scores, and the alerts (the outbox) their changes emit."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntKey, JSONDocument, UTCDateTime


class AlertType(StrEnum):
    """What changed about a customer."""

    stage_changed = "customer.stage_changed"
    at_risk = "customer.at_risk"
    value_tier_changed = "customer.value_tier_changed"
    churn_risk_rose = "customer.churn_risk_rose"


class CustomerState(Base):
    """The latest stored scores of a customer: what the next scoring is compared with."""

    __tablename__ = "customer_states"

    customer_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    clv: Mapped[float] = mapped_column(Float)
    churn_probability: Mapped[float] = mapped_column(Float)
    lifecycle_stage: Mapped[str] = mapped_column(String(16))
    value_tier: Mapped[str] = mapped_column(String(8))
    expected_value_at_risk: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    scored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Alert(Base):
    """One emitted event: the transactional outbox row, the feed item and the webhook message."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_customer_id", "customer_id"),
        # The deliverer's queue: alerts not yet fanned out to the webhook endpoints.
        Index(
            "ix_alerts_undispatched",
            "id",
            postgresql_where="dispatched_at IS NULL",
            sqlite_where="dispatched_at IS NULL",
        ),
        Index("ix_alerts_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(40), unique=True, doc="The webhook-id.")
    type: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("customers.id", ondelete="CASCADE")
    )
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
