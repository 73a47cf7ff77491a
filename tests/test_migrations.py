"""Migrations: up, down and up again on an empty database; ORM and migrations agree; head is enforced."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from app import schema
from app.config import Settings
from app.db import sync_url
from app.main import create_app
from tests.conftest import create_database, drop_database


@pytest.fixture
def empty_postgres() -> Iterator[Settings]:
    url = create_database("clv_mig")
    yield Settings(database_url=url)
    drop_database(url)


def tables(settings: Settings) -> set[str]:
    engine = create_engine(sync_url(settings.database_url))
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names - {"alembic_version"}


def check_models_match(settings: Settings) -> None:
    engine = create_engine(sync_url(settings.database_url))
    with engine.begin() as connection:
        config = schema.alembic_config()
        config.attributes["connection"] = connection
        command.check(config)  # raises when autogenerate would emit operations
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_up_down_up(backend: str, empty_postgres: Settings, sqlite_settings: Settings) -> None:
    settings = (
        empty_postgres
        if backend == "postgres"
        else Settings(database_url=sqlite_settings.database_url + "-fresh")
    )
    schema.upgrade("head", settings)
    assert {"customers", "events"} <= tables(settings)
    check_models_match(settings)
    schema.downgrade("base", settings)
    assert tables(settings) == set()
    schema.upgrade("head", settings)
    assert {"customers", "events"} <= tables(settings)


async def test_app_refuses_a_database_not_at_head(empty_postgres: Settings) -> None:
    app = create_app(empty_postgres)
    with pytest.raises(schema.SchemaNotAtHead, match="clv migrate"):
        async with app.router.lifespan_context(app):
            pass
    schema.upgrade("head", empty_postgres)
    async with app.router.lifespan_context(app):
        pass  # at head it starts
