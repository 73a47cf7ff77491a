"""`clv backtest --dask`: each origin's features and labels read on the workers.

Every customer-id range runs `tasks.origin_range` (the single-node feature statement and label
SQL on that range) on a worker; the client puts the ranges together in external-id order, as
`app.training.backtest.read_origin` returns them for the whole shop. The client then holds one
matrix of every customer at the origin, which the baselines (BG/NBD is fitted on all customers
at once) and the metrics need: feature rows and labels, never raw events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
from sqlalchemy import Engine

from app.distributed import tasks
from app.distributed.cluster import Cluster
from app.features.repository import (
    CHUNK_CUSTOMERS,
    FeatureMatrix,
    id_ranges,
    in_external_id_order,
)
from app.training.backtest import OriginReader, Windows


def origin_reader(cluster: Cluster, chunk_customers: int = CHUNK_CUSTOMERS) -> OriginReader:
    """An `OriginReader` that reads every id range (`chunk_customers` ids) on the workers."""

    def read(
        engine: Engine, origin: dt.datetime, windows: Sequence[int]
    ) -> tuple[FeatureMatrix, Windows]:
        url = engine.url.render_as_string(hide_password=False)
        futures = [
            cluster.client.submit(
                tasks.origin_range, url, origin, list(windows), lo, hi, pure=False
            )
            for lo, hi in id_ranges(engine, chunk_customers)
        ]
        parts = [part for part in cluster.client.gather(futures) if len(part[0])]
        return _combined(origin, windows, parts)

    return read


def _combined(
    origin: dt.datetime,
    windows: Sequence[int],
    parts: list[tuple[FeatureMatrix, Windows]],
) -> tuple[FeatureMatrix, Windows]:
    """The ranges' matrices and labels as one, rows in external-id order."""
    matrix, order = in_external_id_order(origin, [m for m, _ in parts])

    def stacked(days: int, k: int) -> np.ndarray:
        if not parts:
            return np.empty(0, dtype=np.int64 if k else np.float64)
        return np.concatenate([w[days][k] for _, w in parts])[order]

    return matrix, {days: (stacked(days, 0), stacked(days, 1)) for days in set(windows)}
