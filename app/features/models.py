"""Per-customer daily rollups of the events table, kept in step with it at ingest."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntKey, UTCDateTime


class DailyRollup(Base):
    """One customer's events of one UTC day, aggregated exactly (counts, cents, instants).

    `day` is the day number since 1970-01-01 the feature SQL computes per event. Every column is
    what the feature query's `daily` step computes for a whole day, so a full day reads from here
    with the same result as from its raw events (see `app.features.rollups`).
    """

    __tablename__ = "daily_rollups"

    customer_id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    n_events: Mapped[int] = mapped_column(Integer)
    n_timed: Mapped[int] = mapped_column(Integer)
    n_refunds: Mapped[int] = mapped_column(Integer)
    n_orders: Mapped[int] = mapped_column(Integer)
    n_sessions: Mapped[int] = mapped_column(Integer)
    n_product_views: Mapped[int] = mapped_column(Integer)
    n_carts: Mapped[int] = mapped_column(Integer)
    order_cents: Mapped[int] = mapped_column(BigInteger)
    refund_cents: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
