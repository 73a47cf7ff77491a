"""Helpers of the alert and webhook tests: stored runs, alert rows, expected stages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.alerts.service import ScoreRunRecorder, Source
from app.artifacts import current_directory
from app.config import Settings
from app.db import create_sync_engine
from app.scoring.batch import ScoreRunResult, score_all
from app.scoring.registry import load_model
from app.scoring.service import Score, score_matrix
from tests.scoring.support import offline_matrix


def stored_run(settings: Settings, as_of: dt.datetime, source: Source = "rescore") -> int:
    """What `clv rescore --as-of` does, in process: a stored run with alerts; returns alerts."""
    directory = current_directory(settings.model_dir)
    assert directory is not None
    model = load_model(directory, threads=1)
    engine = create_sync_engine(settings)
    recorder = ScoreRunRecorder(settings, model.version, as_of, source)
    try:
        result: ScoreRunResult = score_all(
            engine, model, settings, as_of, None, True, progress=False, on_stored=recorder
        )
    finally:
        engine.dispose()
    assert result.customers > 0
    return recorder.alerts


def expected_scores(settings: Settings, as_of: dt.datetime) -> dict[str, Score]:
    """Every customer's scores as of an instant, straight from offline features and the model."""
    directory = current_directory(settings.model_dir)
    assert directory is not None
    model = load_model(directory, threads=1)
    matrix = offline_matrix(settings, as_of)
    return {s.customer_id: s for s in score_matrix(matrix, model, settings)}


def alert_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every stored alert, oldest first, with its customer's external id."""
    engine = create_engine(make_url(settings.database_url).set(drivername="postgresql+psycopg"))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT a.id, a.alert_id, a.type, c.external_id, a.data FROM alerts a "
                "JOIN customers c ON c.id = a.customer_id ORDER BY a.id"
            )
        ).mappings()
        out = [dict(r) for r in rows]
    engine.dispose()
    return out


def count(settings: Settings, table: str) -> int:
    """Rows in one table."""
    engine = create_engine(make_url(settings.database_url).set(drivername="postgresql+psycopg"))
    with engine.connect() as connection:
        n = int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return n


def count_deliveries(settings: Settings, endpoint_id: int) -> dict[str, int]:
    """An endpoint's deliveries by status."""
    engine = create_engine(make_url(settings.database_url).set(drivername="postgresql+psycopg"))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, count(*) FROM webhook_deliveries WHERE endpoint_id = :e "
                "GROUP BY status"
            ),
            {"e": endpoint_id},
        ).all()
    engine.dispose()
    return {"pending": 0, "delivered": 0, "dead": 0} | {s: int(n) for s, n in rows}
