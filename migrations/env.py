"""Alembic environment: the URL comes from the service settings, the target from the ORM."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from app.config import get_settings
from app.db import Base, create_sync_engine
from app.schema import import_all_models

import_all_models()
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
        # One transaction per migration file: 0005 commits its backfill batch by batch (an
        # autocommit block), which must not commit half of a larger multi-migration transaction.
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:  # handed over by app.schema so tests reuse one connection
        _run(connection)
        return
    engine = create_sync_engine(get_settings())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `clv migrate`")
run_migrations_online()
