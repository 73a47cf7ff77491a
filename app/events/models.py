"""The append-only events table."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, Index, Numeric, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntKey, JSONDocument, UTCDateTime


class EventType(enum.StrEnum):
    """What happened; order and refund carry money, the others are behaviour."""

    order = "order"
    refund = "refund"
    session = "session"
    page_view = "page_view"
    product_view = "product_view"
    add_to_cart = "add_to_cart"
    checkout_start = "checkout_start"
    search = "search"


MONETARY_TYPES = frozenset({EventType.order, EventType.refund})
_TYPE_LIST = ", ".join(f"'{t.value}'" for t in EventType)
_MONEY_LIST = ", ".join(f"'{t.value}'" for t in sorted(MONETARY_TYPES))


class Event(Base):
    """One customer event; rows are never updated, only erased with their customer."""

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(f"type IN ({_TYPE_LIST})", name="known_type"),
        CheckConstraint(
            f"(type IN ({_MONEY_LIST})) = (amount IS NOT NULL AND currency IS NOT NULL)",
            name="money_only_on_orders_and_refunds",
        ),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        # Every feature query reads "this customer's events up to as_of" through this index.
        Index("ix_events_customer_id_occurred_at", "customer_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    # No FOREIGN KEY: its per-row trigger halved bulk-load speed. The one write path
    # (EventRepository.ensure_customers, BulkLoader) resolves ids from customers, and erasure
    # row-locks the customer, so an event never outlives or predates its customer row.
    customer_id: Mapped[int] = mapped_column(BigIntKey)
    type: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    order_id: Mapped[str | None] = mapped_column(String(128))
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
