"""Database plumbing: ORM base, portable column types, engines and the per-request session."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeAlias

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose metadata Alembic compares against the migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: 64-bit surrogate keys on Postgres; SQLite only auto-increments INTEGER PRIMARY KEY.
BigIntKey = BigInteger().with_variant(Integer(), "sqlite")
#: JSONB on Postgres, JSON text elsewhere.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An instant: timestamptz on Postgres, naive-UTC text on SQLite, always aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give an offset")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:  # noqa: ARG002
        if value is None:
            return None
        moment: dt.datetime = (
            # SQLite expressions (min/max) come back as text
            dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        )
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)


def _with_driver(url: str, *, asynchronous: bool) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if asynchronous and "sslmode" in parsed.query:
            # libpq spells it sslmode=, asyncpg ssl=; one URL serves both drivers.
            query = dict(parsed.query)
            query["ssl"] = query.pop("sslmode")
            parsed = parsed.set(query=query)
        return parsed.set(drivername="postgresql+asyncpg" if asynchronous else "postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite")
    raise ValueError(f"unsupported database {backend!r}: use postgresql://... or sqlite:///...")


def async_url(url: str) -> URL:
    """The URL with the async driver the service uses (asyncpg, aiosqlite)."""
    return _with_driver(url, asynchronous=True)


def sync_url(url: str) -> URL:
    """The URL with the sync driver the CLI and migrations use (psycopg 3, sqlite3)."""
    return _with_driver(url, asynchronous=False)


def _prepare_sqlite_file(url: URL) -> None:
    from pathlib import Path

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout waits instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_sync_engine(settings: Settings, **kwargs: Any) -> Engine:
    """A synchronous engine for migrations, bulk loads and training."""
    url = sync_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {"connect_timeout": max(1, int(settings.db_connect_timeout_seconds))}
    return create_engine(url, connect_args=connect_args, **kwargs)


def create_async_db_engine(settings: Settings) -> AsyncEngine:
    """The service's async engine, with pool limits and timeouts from the settings."""
    url = async_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        engine = create_async_engine(url, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    server_settings = {"application_name": "clv-service"}
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout_seconds,
        "server_settings": server_settings,
    }
    if settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
        # The server cancels first (a clean error, the connection stays usable); the client-side
        # command_timeout only fires when the server cannot answer at all (network partition).
        connect_args["command_timeout"] = (
            settings.db_statement_timeout_ms / 1000 + settings.db_connect_timeout_seconds
        )
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # Off by default: a dead pooled connection is classified as 503 (app.errors) and the
        # pool is invalidated, instead of paying a ping round trip on every checkout.
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_timeout=settings.db_connect_timeout_seconds,
        connect_args=connect_args,
        # A failed statement's error (logged with its stack) would otherwise quote the bound
        # parameters: event properties, profile attributes, ids.
        hide_parameters=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


#: What read-only repositories accept: a session, an autocommit connection or a raw asyncpg one.
Reader: TypeAlias = AsyncSession | AsyncConnection | asyncpg.Connection


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed before the response is sent, rolled back on error."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


# scope="function": the commit happens before the response leaves, so a 2xx means committed.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


@asynccontextmanager
async def read_connection(state: Any) -> AsyncIterator[Reader]:
    """A connection for one read-only statement (from an app.state): the asyncpg read pool,
    else autocommit SQLAlchemy. The hot path opens it in its endpoint, not as a dependency."""
    pool: asyncpg.Pool | None = getattr(state, "read_pool", None)
    if pool is not None:
        async with pool.acquire() as raw:
            yield raw
        return
    engine: AsyncEngine = state.engine
    async with engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


async def get_reader(request: Request) -> AsyncIterator[Reader]:
    """A connection for one read-only statement: the asyncpg read pool, else autocommit SQLAlchemy."""
    async with read_connection(request.app.state) as reader:
        yield reader


# Reads that need one consistent snapshot across several statements must use SessionDep.
ReaderDep = Annotated[Reader, Depends(get_reader, scope="function")]


async def create_read_pool(settings: Settings) -> asyncpg.Pool | None:
    """Postgres only: a plain asyncpg pool for the hot read path (predictions, features).

    One prepared statement and one round trip per request, without the ORM session, the
    SQLAlchemy pool and greenlet hops, which cost more CPU than the query itself. SQLite gets
    None and those reads go through SQLAlchemy.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        return None
    server_settings = {"application_name": "clv-service-read"}
    if settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=settings.db_read_pool_size,
        timeout=settings.db_connect_timeout_seconds,
        command_timeout=(settings.db_statement_timeout_ms or 0) / 1000
        + settings.db_connect_timeout_seconds,
        server_settings=server_settings,
        # Only single read statements run here: no session state to reset, so skip the
        # RESET ALL round trip asyncpg would otherwise make on every release.
        reset=_keep_session,
    )
    return pool


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook: nothing to undo after a read-only statement."""
