"""Schema state: run Alembic migrations and check that a database is at head."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from app.config import ROOT_DIR, Settings, get_settings
from app.db import create_sync_engine


class SchemaNotAtHead(RuntimeError):
    """The database is missing migrations (or is ahead of this code)."""


def import_all_models() -> None:
    """Import every ORM module so Base.metadata knows all tables."""
    import app.alerts.models
    import app.auth.models
    import app.customers.models
    import app.events.models
    import app.features.models
    import app.scoring.models
    import app.webhooks.models  # noqa: F401


def alembic_config() -> Config:
    """Alembic configuration pointing at the repository's migrations/."""
    config = Config(str(ROOT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT_DIR / "migrations"))
    return config


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, None when it was never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def check_at_head(connection: Connection) -> None:
    """Raise SchemaNotAtHead, saying what to run, unless the database is at head."""
    current, head = current_revision(connection), head_revision()
    if current != head:
        state = "empty (never migrated)" if current is None else f"at revision {current}"
        raise SchemaNotAtHead(
            f"database schema is {state}, this code needs {head}: run `clv migrate` "
            "(alembic upgrade head) against CLV_DATABASE_URL first"
        )


def upgrade(revision: str = "head", settings: Settings | None = None) -> None:
    """Migrate the configured database up to `revision`."""
    _run(command.upgrade, revision, settings)


def downgrade(revision: str, settings: Settings | None = None) -> None:
    """Migrate the configured database down to `revision`."""
    _run(command.downgrade, revision, settings)


def _run(step: object, revision: str, settings: Settings | None) -> None:
    engine = create_sync_engine(settings or get_settings())
    try:
        # Not in a transaction of ours: alembic runs each migration in its own transaction
        # (env.py), and 0005's backfill commits batch by batch in an autocommit block.
        with engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            step(config, revision)  # type: ignore[operator]
    finally:
        engine.dispose()
