"""`clv score --dask`: every customer-id range scored on a worker, same numbers as single node.

Each worker computes its range's features with the single-node statement, loads the model
directory once (a path the workers can read: the same disk, or a shared volume) and scores
with the same `score_matrix`. The output is either
- one file (`--out scores.parquet` or `.csv`): the client writes the ranges in id order as they
  arrive, holding at most a few ranges at once; or
- a directory of Parquet partitions (`--out DIR/`, no suffix): each worker writes its own
  `part-NNNNN.parquet` (one per range, in id order) straight into DIR, which must be on storage
  every worker and the reader share. Read it back with `pyarrow.parquet.read_table(DIR)`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.config import Settings
from app.distributed import tasks
from app.distributed.cluster import Cluster
from app.features.repository import id_ranges
from app.scoring.batch import ScoreFile, ScoreRunResult
from app.scoring.registry import LoadedModel


def is_partitioned(out: Path) -> bool:
    """`--out` without a .csv/.parquet suffix names a directory of Parquet partitions."""
    return out.suffix.lower() not in (".csv", ".parquet", ".pq")


def score_on_dask(
    cluster: Cluster,
    engine: Engine,
    model: LoadedModel,
    settings: Settings,
    as_of: dt.datetime,
    out: Path,
) -> ScoreRunResult:
    """Score every customer with an event by `as_of` on the cluster's workers into `out`."""
    started = time.perf_counter()
    client = cluster.client
    url = engine.url.render_as_string(hide_password=False)
    ranges = id_ranges(engine)
    directory = str(model.directory.resolve())
    if is_partitioned(out):
        building = out.with_name(f".{out.name}.partial")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        futures = [
            client.submit(
                tasks.score_range,
                url,
                directory,
                settings,
                as_of,
                lo,
                hi,
                str(building.resolve() / f"part-{i:05d}.parquet"),
                pure=False,
            )
            for i, (lo, hi) in enumerate(ranges)
        ]
        total = sum(int(n) for n in client.gather(futures))
        if out.exists():
            shutil.rmtree(out)
        building.replace(out)
        return ScoreRunResult(total, time.perf_counter() - started, model.version, None, out)
    writer = ScoreFile(out, model.version, as_of)
    total = 0
    # A window of ranges in flight: workers stay busy, the client holds a few ranges at most.
    window = 2 * max(cluster.workers, 1)
    pending: deque[Any] = deque()
    queue = iter(ranges)
    for lo, hi in queue:
        pending.append(
            client.submit(
                tasks.score_range, url, directory, settings, as_of, lo, hi, None, pure=False
            )
        )
        if len(pending) >= window:
            break
    while pending:
        scores = pending.popleft().result()
        writer.write(scores)
        total += len(scores)
        nxt = next(queue, None)
        if nxt is not None:
            pending.append(
                client.submit(
                    tasks.score_range, url, directory, settings, as_of, *nxt, None, pure=False
                )
            )
    writer.close()
    return ScoreRunResult(total, time.perf_counter() - started, model.version, None, out)
