"""Migration 0005's backfill survives an interruption: batches commit one by one, and a re-run
continues from the last committed batch (not from the start) to the result of one full run."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app import schema
from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader
from tests.conftest import create_database, drop_database
from tests.features.test_rollups import _bulk_columns, rollup_table

BATCH = 4  # customer ids per batch: 25 customers make 7 batches


def _revision(settings: Settings) -> str | None:
    engine = create_sync_engine(settings)
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    return None if revision is None else str(revision)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_interrupted_backfill_resumes_to_the_full_result(
    backend: str, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = create_database("i13_resume") if backend == "postgres" else None
    target = Settings(database_url=url) if url else sqlite_settings
    try:
        schema.upgrade("head", target)
        ids = [f"resume-{k}" for k in range(25)]
        engine = create_sync_engine(target)
        BulkLoader(engine, target.currency).load(_bulk_columns(13, ids, 3000, "r"))
        with engine.connect() as connection:
            top = connection.execute(text("SELECT max(id) FROM customers")).scalar_one()
        engine.dispose()
        batches = top // BATCH + 1
        monkeypatch.setenv("CLV_ROLLUP_BACKFILL_BATCH", str(BATCH))

        # The reference: one uninterrupted backfill from 0004.
        schema.downgrade("0004", target)
        schema.upgrade("head", target)
        full = rollup_table(target)
        assert full == rollup_table(target, rebuilt=True)

        # Interrupted after 2 batches: those stay committed, the revision stays 0004.
        schema.downgrade("0004", target)
        monkeypatch.setenv("CLV_ROLLUP_BACKFILL_MAX_BATCHES", "2")
        with pytest.raises(Exception, match="stopped after 2 batches"):
            schema.upgrade("head", target)
        assert _revision(target) == "0004"
        partial = rollup_table(target)
        assert partial
        assert {row[0] for row in partial} <= set(range(2 * BATCH))
        assert partial == [row for row in full if row[0] < 2 * BATCH]

        # The re-run may run only the batches left from the last committed one (batch 1 again,
        # then 2..): starting over would need one more batch and stop again.
        monkeypatch.setenv("CLV_ROLLUP_BACKFILL_MAX_BATCHES", str(batches - 1))
        schema.upgrade("head", target)
        assert _revision(target) == "0005"
        assert rollup_table(target) == full
    finally:
        if url:
            drop_database(url)
