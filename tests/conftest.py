"""Shared fixtures: a fresh Postgres database per test session, apps and clients on top of it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import schema
from app.config import Settings
from app.main import create_app

#: The server the suite creates its databases on; override with CLV_TEST_POSTGRES_URL.
ADMIN_URL = os.environ.get("CLV_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_master.txt"


def create_database(prefix: str) -> str:
    """Create an empty database of our own on the test server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database this suite created (terminating leftover connections)."""
    name = make_url(url).database
    admin = create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database migrated to head, dropped when the session ends."""
    url = create_database("clv_test")
    schema.upgrade("head", Settings(database_url=url))
    yield url
    drop_database(url)


@pytest.fixture
def settings(postgres_url: str) -> Iterator[Settings]:
    """Settings on the session database, emptied after each test."""
    yield Settings(database_url=postgres_url)
    engine = create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"))
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE customers, events RESTART IDENTITY"))
    engine.dispose()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings on an embedded SQLite file, migrated to head."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'clv.db'}")
    schema.upgrade("head", settings)
    return settings


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://clv.test") as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app on Postgres."""
    async for c in _client(settings):
        yield c


@pytest.fixture
async def sqlite_client(sqlite_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app on the SQLite default."""
    async for c in _client(sqlite_settings):
        yield c
