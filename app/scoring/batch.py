"""`clv score`: every customer as of T, set-based features, ONNX in large batches, one file out."""

from __future__ import annotations

import csv
import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine
from tqdm import tqdm

from app.config import Settings
from app.features.repository import offline_features
from app.scoring import repository
from app.scoring.registry import LoadedModel
from app.scoring.scores import Score
from app.scoring.service import score_matrix

COLUMNS = (
    "customer_id",
    "clv",
    "churn_probability",
    "lifecycle_stage",
    "value_tier",
    "expected_value_at_risk",
    "model_version",
    "as_of",
    "basis",
    # Issue 11 (empty / null for models without them).
    "clv_p10",
    "clv_p50",
    "clv_p90",
    "expected_orders",
    "order_probability",
)
#: Columns of issue 11, typed float64 (nullable) in Parquet.
_OPTIONAL = ("clv_p10", "clv_p50", "clv_p90", "expected_orders", "order_probability")


#: Called with the engine, a stored chunk's customer keys and scores, once the chunk committed.
OnStored = Callable[[Engine, np.ndarray, Sequence[Score]], None]


@dataclass(frozen=True)
class ScoreRunResult:
    """What a batch scoring run produced."""

    customers: int
    seconds: float
    model_version: str
    run_id: int | None
    path: Path | None


class _Writer:
    """CSV or Parquet by file extension, written chunk by chunk."""

    def __init__(self, path: Path, model_version: str, as_of: dt.datetime) -> None:
        self.path = path
        self.model_version = model_version
        # The API's spelling of UTC (Z), so files and responses compare as text.
        self.as_of = as_of.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        self.parquet = path.suffix.lower() in (".parquet", ".pq")
        self.temporary = path.with_name(f".{path.name}.partial")
        self._parquet_writer: pq.ParquetWriter | None = None
        self._csv = None if self.parquet else self.temporary.open("w", newline="")
        if self._csv is not None:
            self._csv_writer = csv.writer(self._csv)
            self._csv_writer.writerow(COLUMNS)

    def write(self, scores: Sequence[Score]) -> None:
        if self.parquet:
            table = pa.table(
                {
                    "customer_id": [s.customer_id for s in scores],
                    "clv": pa.array([s.clv for s in scores], pa.float64()),
                    "churn_probability": pa.array(
                        [s.churn_probability for s in scores], pa.float64()
                    ),
                    "lifecycle_stage": [s.lifecycle_stage for s in scores],
                    "value_tier": [s.value_tier for s in scores],
                    "expected_value_at_risk": pa.array(
                        [s.expected_value_at_risk for s in scores], pa.float64()
                    ),
                    "model_version": [self.model_version] * len(scores),
                    "as_of": [self.as_of] * len(scores),
                    "basis": [s.basis for s in scores],
                    **{
                        name: pa.array([getattr(s, name) for s in scores], pa.float64())
                        for name in _OPTIONAL
                    },
                }
            )
            if self._parquet_writer is None:
                metadata = {
                    b"model_version": self.model_version.encode(),
                    b"as_of": self.as_of.encode(),
                }
                self._parquet_writer = pq.ParquetWriter(
                    self.temporary, table.schema.with_metadata(metadata)
                )
            self._parquet_writer.write_table(table)
            return
        self._csv_writer.writerows(
            (
                s.customer_id,
                s.clv,
                s.churn_probability,
                s.lifecycle_stage,
                s.value_tier,
                s.expected_value_at_risk,
                self.model_version,
                self.as_of,
                s.basis,
                *("" if getattr(s, name) is None else getattr(s, name) for name in _OPTIONAL),
            )
            for s in scores
        )

    def close(self) -> None:
        """Finish the file and move it into place (a reader never sees half a file)."""
        if self._parquet_writer is not None:
            self._parquet_writer.close()
        elif self.parquet:  # no rows at all: still an empty, typed file
            pq.write_table(
                pa.table({c: pa.array([], pa.string()) for c in COLUMNS}), self.temporary
            )
        if self._csv is not None:
            self._csv.close()
        self.temporary.replace(self.path)


def write_file(path: Path, model_version: str, as_of: dt.datetime, scores: Sequence[Score]) -> None:
    """One file of scores (CSV or Parquet by extension), moved into place when complete."""
    writer = _Writer(path, model_version, as_of)
    writer.write(scores)
    writer.close()


class ScoreFile:
    """A scores file written chunk by chunk (`clv score --dask` into one file)."""

    def __init__(self, path: Path, model_version: str, as_of: dt.datetime) -> None:
        self._writer = _Writer(path, model_version, as_of)

    def write(self, scores: Sequence[Score]) -> None:
        self._writer.write(scores)

    def close(self) -> None:
        self._writer.close()


def score_all(
    engine: Engine,
    model: LoadedModel,
    settings: Settings,
    as_of: dt.datetime,
    out: Path | None,
    store: bool,
    progress: bool = True,
    on_stored: OnStored | None = None,
) -> ScoreRunResult:
    """Score every customer with an event by `as_of`; write `out` and/or a stored run.

    `on_stored` runs after each stored chunk commits (the alerts outbox hooks in there).
    """
    started = time.perf_counter()
    writer = _Writer(out, model.version, as_of) if out else None
    total = 0
    with engine.connect() as connection:
        customers = repository.count_customers(connection)
    bar = tqdm(
        total=customers,
        unit="cust",
        desc="scoring",
        disable=None if progress else True,
        file=sys.stderr,
    )
    run_id = None
    if store:
        with engine.begin() as connection:
            run_id = repository.start_run(connection, as_of, model.version)
    # One transaction per chunk: locks on customer rows (see write_scores) last seconds, not
    # the whole run. The run only shows in /v1/segments once finish_run records its size.
    for matrix in offline_features(engine, as_of):
        scores = score_matrix(matrix, model, settings)
        if writer:
            writer.write(scores)
        if run_id is not None:
            with engine.begin() as connection:
                repository.write_scores(connection, run_id, matrix.customer_pks, scores)
            if on_stored is not None:
                on_stored(engine, matrix.customer_pks, scores)
        total += len(scores)
        bar.update(len(scores))
    if run_id is not None:
        with engine.begin() as connection:
            repository.finish_run(connection, run_id, total)
    bar.close()
    if writer:
        writer.close()
    return ScoreRunResult(total, time.perf_counter() - started, model.version, run_id, out)
