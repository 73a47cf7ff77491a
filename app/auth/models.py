"""API keys: only a hash of each key is stored."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntKey, UTCDateTime


class ApiKey(Base):
    """A bearer key with scopes; `prefix` identifies it in listings and logs, `key_hash` verifies it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(256), doc="Space-separated scopes.")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
