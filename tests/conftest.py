"""Shared fixtures: a fresh Postgres database per test session, apps and clients on top of it."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from app import schema
from app.config import Settings
from app.main import create_app
from app.observability.logs import JsonFormatter

#: The server the suite creates its databases on; override with CLV_TEST_POSTGRES_URL.
ADMIN_URL = os.environ.get("CLV_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_master.txt"


def api_key(database_url: str, scopes: str = "all", name: str = "test") -> str:
    """A real API key stored in that database (the test suite authenticates like a client)."""
    from app.auth.keys import parse_scopes
    from app.auth.repository import create_key
    from app.db import create_sync_engine

    engine = create_sync_engine(Settings(database_url=database_url))
    with engine.begin() as connection:
        key = create_key(connection, name, parse_scopes(scopes))
    engine.dispose()
    return key.secret


def bearer(database_url: str, scopes: str = "all") -> dict[str, str]:
    """An Authorization header with a fresh key for that database."""
    return {"Authorization": f"Bearer {api_key(database_url, scopes)}"}


@contextmanager
def captured_logs(level: int) -> Iterator[io.StringIO]:
    """What the service logs meanwhile (loggers `clv` and `app` at `level`), formatted by the
    production JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("clv", "app")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield stream
    finally:
        for logger, previous in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(previous)


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


MODEL_END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)


@contextmanager
def demo_database(
    prefix: str, customers: int, seed: int, years: float = 3, end: dt.datetime = MODEL_END
) -> Iterator[tuple[str, Engine]]:
    """A database of our own, migrated to head, holding the demo generator's shop of `customers`
    over the `years` before `end`; yields (URL, engine) and drops it afterwards."""
    from app.db import create_sync_engine
    from app.demo.generator import generate_demo
    from app.events.bulk import BulkLoader

    url = create_database(prefix)
    try:
        settings = Settings(database_url=url)
        schema.upgrade("head", settings)
        engine = create_sync_engine(settings)
        loader = BulkLoader(engine, "USD")
        start = end - dt.timedelta(days=round(365 * years))
        for chunk in generate_demo(customers, seed, start=start, end=end):
            loader.load(chunk.events, chunk.customers)
        yield url, engine
        engine.dispose()
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small but real model: trained by `clv train`'s code on 1,500 synthetic customers."""
    from app.db import create_sync_engine
    from app.demo.generator import generate_demo
    from app.events.bulk import BulkLoader
    from app.training.options import TrainOptions
    from app.training.train import train

    url = create_database("clv_model")
    try:
        settings = Settings(database_url=url)
        schema.upgrade("head", settings)
        engine = create_sync_engine(settings)
        loader = BulkLoader(engine, "USD")
        for chunk in generate_demo(
            1_500, 3, start=MODEL_END - dt.timedelta(days=900), end=MODEL_END
        ):
            loader.load(chunk.events, chunk.customers)
        directory = tmp_path_factory.mktemp("models")
        options = TrainOptions(
            as_of=MODEL_END,
            model_dir=directory,
            clv_horizon_days=180,
            churn_horizon_days=90,
            stack=2,
            stack_step_days=60,
            progress=False,
            baselines=False,
        )
        train(engine, options)
        engine.dispose()
    finally:
        drop_database(url)
    return directory


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database migrated to head, dropped when the session ends."""
    url = create_database("clv_test")
    schema.upgrade("head", Settings(database_url=url))
    yield url
    drop_database(url)


@pytest.fixture
def settings(postgres_url: str, model_dir: Path) -> Iterator[Settings]:
    """Settings on the session database (emptied after each test) and the session's model."""
    yield Settings(database_url=postgres_url, model_dir=model_dir, model_poll_seconds=0)
    engine = create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"))
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE customers, events, daily_rollups, scores, score_runs, api_keys, "
                "customer_states, alerts, webhook_endpoints, webhook_deliveries RESTART IDENTITY"
            )
        )
    engine.dispose()


@pytest.fixture
def sqlite_settings(tmp_path: Path, model_dir: Path) -> Settings:
    """Settings on an embedded SQLite file, migrated to head, with the session's model."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'clv.db'}", model_dir=model_dir, model_poll_seconds=0
    )
    schema.upgrade("head", settings)
    return settings


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client (all-scopes key) of an app built for `settings`, lifespan included."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = bearer(settings.database_url)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://clv.test", headers=headers
        ) as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app on Postgres."""
    async with app_client(settings) as c:
        yield c


@pytest.fixture
async def sqlite_client(sqlite_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app on the SQLite default."""
    async with app_client(sqlite_settings) as c:
        yield c
