"""The customers table: one row per external customer id."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntKey, JSONDocument, UTCDateTime


class Customer(Base):
    """A shop customer, created on first event or profile write."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    signup_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    country: Mapped[str | None] = mapped_column(String(2))
    acquisition_channel: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, default=dict, server_default="{}"
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
