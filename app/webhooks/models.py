"""Webhook endpoints and the delivery of each alert to each of them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntKey, UTCDateTime


class WebhookEndpoint(Base):
    """A receiver URL, the alert types it wants (None: all) and its signing secret(s)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str] | None] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(256))
    # Kept in clear: signing needs the key itself (a hash could not sign).
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())


class DeliveryStatus:
    """Where a delivery stands."""

    pending = "pending"
    delivered = "delivered"
    dead = "dead"


class WebhookDelivery(Base):
    """One alert to one endpoint: attempts so far and when the next one is due."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "alert_id"),
        Index("ix_webhook_deliveries_alert_id", "alert_id"),
        # The deliverer's queue: due pending deliveries.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where="status = 'pending'",
            sqlite_where="status = 'pending'",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    alert_id: Mapped[int] = mapped_column(BigIntKey, ForeignKey("alerts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
