"""What runs on a Dask worker: one customer-id range at a time, read straight from Postgres.

Each task opens (once per worker process) its own engine on the database URL it is given and runs
the same aggregate statement as the single-node path (`app.features.repository.range_features`)
and the same label SQL (`app.training.repository.range_labels`): raw events never leave the
database, only feature rows and labels leave the worker, and only the parts the client needs.
These functions are plain module-level functions so that workers import them by name (the
package must be installed on every worker, same version: docs/dask.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.config import Settings
from app.features.definitions import FEATURE_NAMES
from app.features.repository import FeatureMatrix, in_external_id_order, range_features
from app.scoring.registry import LoadedModel
from app.scoring.scores import Score
from app.training.dataset import (
    Rows,
    Split,
    Split3,
    churn_label,
    clv_label,
    hash_share,
    orders_label,
    propensity_label,
    split_masks,
)
from app.training.repository import content_sum, range_labels

#: Label functions by name (names travel to the workers, not functions).
LABELS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "clv": clv_label,
    "churn": churn_label,
    "orders": orders_label,
    "propensity": propensity_label,
}

# One engine and one loaded model per worker process, reused by every task it runs.
_ENGINES: dict[str, Engine] = {}
_MODELS: dict[tuple[str, str], LoadedModel] = {}


def worker_engine(database_url: str) -> Engine:
    """This worker's engine on `database_url` (created on first use)."""
    if database_url not in _ENGINES:
        from app.db import create_sync_engine

        _ENGINES[database_url] = create_sync_engine(
            Settings(database_url=database_url), pool_size=1, max_overflow=1
        )
    return _ENGINES[database_url]


def _by_external_id(matrix: FeatureMatrix) -> FeatureMatrix:
    return in_external_id_order(matrix.as_of, [matrix])[0]


def range_content(database_url: str, lo: int, hi: int) -> int:
    """This range's share of the data fingerprint's content hash (a sum: ranges add up)."""
    return content_sum(worker_engine(database_url), (lo, hi))


# ---------------------------------------------------------------------------------- scoring


def _model(directory: str, settings: Settings) -> LoadedModel:
    key = (directory, settings.currency)
    if key not in _MODELS:
        from app.scoring.registry import load_model

        _MODELS[key] = load_model(
            Path(directory), threads=settings.onnx_threads, currency=settings.currency
        )
    return _MODELS[key]


def score_range(
    database_url: str,
    model_directory: str,
    settings: Settings,
    as_of: dt.datetime,
    lo: int,
    hi: int,
    part: str | None,
) -> list[Score] | int:
    """Scores of the customers in [lo, hi): returned, or written to the Parquet file `part`."""
    from app.scoring.service import score_matrix

    matrix = range_features(worker_engine(database_url), as_of, lo, hi)
    model = _model(model_directory, settings)
    scores = score_matrix(matrix, model, settings)
    if part is None:
        return scores
    if scores:
        from app.scoring.batch import write_file

        write_file(Path(part), model.version, as_of, scores)
    return len(scores)


def origin_range(
    database_url: str, origin: dt.datetime, windows: Sequence[int], lo: int, hi: int
) -> tuple[FeatureMatrix, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """A backtest origin's features and window labels for the customers in [lo, hi) (external-id
    order), as `app.training.backtest.read_origin` reads them for everyone."""
    engine = worker_engine(database_url)
    matrix = _by_external_id(range_features(engine, origin, lo, hi))
    return matrix, {
        days: range_labels(engine, origin, days, matrix.customer_ids, lo, hi)
        for days in set(windows)
    }


# --------------------------------------------------------------------------------- training

#: target -> (cutoffs newest first, label window in days, label name)
Plan = dict[str, tuple[list[dt.datetime], int, str]]


def partition_rows(database_url: str, lo: int, hi: int, plan: Plan) -> dict[str, Rows]:
    """Every target's stacked rows for the customers in [lo, hi), as `Panel.rows` builds them.

    Within a cutoff the customers are in external-id order, as in the single-node matrices.
    """
    engine = worker_engine(database_url)
    features: dict[dt.datetime, FeatureMatrix] = {}
    labels: dict[tuple[dt.datetime, int], tuple[np.ndarray, np.ndarray]] = {}
    out: dict[str, Rows] = {}
    for target, (cutoffs, days, label_name) in plan.items():
        ids: list[str] = []
        index, blocks, values = [], [], []
        for i, cutoff in enumerate(cutoffs):
            if cutoff not in features:
                features[cutoff] = _by_external_id(range_features(engine, cutoff, lo, hi))
            matrix = features[cutoff]
            if (cutoff, days) not in labels:
                labels[(cutoff, days)] = range_labels(
                    engine, cutoff, days, matrix.customer_ids, lo, hi
                )
            net, orders = labels[(cutoff, days)]
            ids += matrix.customer_ids
            index.append(np.full(len(matrix), i))
            blocks.append(matrix.values.reshape(len(matrix), len(FEATURE_NAMES)))
            values.append(LABELS[label_name](net, orders))
        out[target] = Rows(
            ids,
            np.concatenate(index),
            np.vstack(blocks),
            np.concatenate(values).astype(np.float64),
        )
    return out


def target_rows(rows: dict[str, Rows], target: str) -> Rows:
    """One target's rows of a partition."""
    return rows[target]


def fitting_counts(
    rows: Rows,
    n_cutoffs: int,
    holdout_fraction: float,
    split: Split,
    validation_fraction: float,
    seed: int,
) -> np.ndarray:
    """Fitting rows (neither holdout nor validation) per cutoff index in this partition."""
    holdout, validation = split_masks(rows, holdout_fraction, split, validation_fraction, seed)
    counts: np.ndarray = np.bincount(rows.cutoff[~holdout & ~validation], minlength=n_cutoffs)
    return counts


def part_of(split: Split3, name: str) -> Rows:
    """`fold`, `validation`, `train` or `holdout` of a partition's split."""
    part: Rows = getattr(split, name)
    return part


def size(rows: Rows) -> int:
    """Row count of a partition."""
    return len(rows)


def features32(rows: Rows) -> np.ndarray:
    """The features as XGBoost reads them (float32, NaN = missing)."""
    return rows.features.astype(np.float32)


def labels_of(rows: Rows) -> np.ndarray:
    """The labels."""
    return rows.label


def latest_figures(rows: dict[str, Rows]) -> dict[str, int]:
    """The eligibility counts of this partition (summed by the client)."""
    clv, churn = rows["clv"], rows["churn"]
    latest = clv.cutoff == 0
    orders = clv.features[latest, FEATURE_NAMES.index("orders")]
    churned = churn.label[churn.cutoff == 0]
    return {
        "buyers": int((orders > 0).sum()),
        "in_window": int((clv.label[latest] > 0).sum()),
        "churned": int(churned.sum()),
        "stayed": int((churned == 0).sum()),
        "latest_customers": int(latest.sum()),
        "latest_churn_customers": int((churn.cutoff == 0).sum()),
    }


def feature_min_max(rows: Rows) -> np.ndarray | None:
    """[min; max] of every feature over this partition's rows (None when empty)."""
    if not len(rows):
        return None
    return np.vstack([rows.features.min(axis=0), rows.features.max(axis=0)])


def latest_sample(rows: Rows, share: float) -> FeatureMatrix:
    """The latest cutoff's customers whose BG/NBD sample hash is below `share` (all: 10,000)."""
    latest = rows.cutoff == 0
    ids = [c for c, keep in zip(rows.customer_ids, latest, strict=True) if keep]
    values = rows.features[latest]
    keep = np.array([hash_share(c, "bgnbd") < share for c in ids], dtype=bool)
    kept = [c for c, k in zip(ids, keep, strict=True) if k]
    return FeatureMatrix(
        dt.datetime.min.replace(tzinfo=dt.UTC), kept, values[keep], np.zeros(len(kept))
    )


def concat_rows(parts: Sequence[Rows]) -> Rows:
    """Partitions stacked in order."""
    ids = [c for p in parts for c in p.customer_ids]
    if not parts:
        return Rows([], np.empty(0, dtype=np.int64), np.empty((0, len(FEATURE_NAMES))), np.empty(0))
    return Rows(
        ids,
        np.concatenate([p.cutoff for p in parts]),
        np.vstack([p.features.reshape(len(p), len(FEATURE_NAMES)) for p in parts]),
        np.concatenate([p.label for p in parts]),
    )


def worker_memory() -> dict[str, Any]:
    """This worker process's resident and peak memory (MB), for the benchmark."""
    import resource

    import psutil

    return {
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
