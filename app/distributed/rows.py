"""Training rows that stay on the Dask workers, one partition per customer-id range.

`DaskPanel` plays `app.training.dataset.Panel`'s part for `clv train --dask`: each worker builds
the stacked rows of its ranges (features and labels, read from Postgres with the single-node
SQL). The client only ever holds what the single-node code needs in full: the validation and
holdout rows, counts and min/max per partition, the BG/NBD fit sample (at most 100,000
customers) and the served predictions' percentiles.

Partition i always lives on the i-th worker (workers sorted by address, i modulo their count),
so the same data, chunk size and worker count give the same partitions on the same ranks, and
`xgboost.dask` (hist) then builds the same trees: see docs/dask.md, Reproducibility.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.distributed import tasks
from app.distributed.cluster import Cluster
from app.features.definitions import FEATURE_NAMES
from app.features.repository import FeatureMatrix, id_ranges
from app.training.dataset import (
    Rows,
    Split,
    Split3,
    bgnbd_share,
    fold_start_from_counts,
    split_rows,
)


@dataclass
class RemoteRows:
    """Rows held by the workers: one future per partition, its worker and its length."""

    client: Any
    futures: list[Any]
    workers: list[str]
    lengths: list[int]

    def __len__(self) -> int:
        return sum(self.lengths)

    def _map(self, function: Any, *args: Any) -> list[Any]:
        return [
            self.client.submit(function, future, *args, workers=[worker], pure=False)
            for future, worker in zip(self.futures, self.workers, strict=True)
        ]

    def derive(self, function: Any, *args: Any, sized: bool = True) -> RemoteRows:
        """Each partition mapped by `function` on its own worker (to rows when `sized`)."""
        futures = self._map(function, *args)
        if not sized:
            return RemoteRows(self.client, futures, self.workers, [0] * len(futures))
        lengths = self.client.gather(
            [
                self.client.submit(tasks.size, f, workers=[w], pure=False)
                for f, w in zip(futures, self.workers, strict=True)
            ]
        )
        return RemoteRows(self.client, futures, self.workers, [int(n) for n in lengths])

    def gather(self) -> Rows:
        """Every partition on the client, stacked in range order (only for small parts)."""
        return tasks.concat_rows(self.client.gather(self.futures))

    def latest_labels(self) -> np.ndarray:
        """The labels of the latest cutoff's rows, in range order."""
        parts = self.client.gather(self._map(_latest_labels))
        return np.concatenate(parts) if parts else np.empty(0)

    def min_max(self) -> np.ndarray | None:
        """[min; max] of every feature (see dataset.feature_ranges)."""
        blocks = [b for b in self.client.gather(self._map(tasks.feature_min_max)) if b is not None]
        if not blocks:
            return None
        stacked = np.vstack(blocks)
        return np.vstack([stacked.min(axis=0), stacked.max(axis=0)])

    def dask_matrix(self) -> Any:
        """An `xgboost.dask.DaskDMatrix` over the partitions, where they are."""
        import dask
        import dask.array as da
        from xgboost import dask as dxgb

        features, labels = [], []
        for future, worker, n in zip(self.futures, self.workers, self.lengths, strict=True):
            if not n:
                continue
            x = self.client.submit(tasks.features32, future, workers=[worker], pure=False)
            y = self.client.submit(tasks.labels_of, future, workers=[worker], pure=False)
            features.append(
                da.from_delayed(dask.delayed(x), shape=(n, len(FEATURE_NAMES)), dtype=np.float32)
            )
            labels.append(da.from_delayed(dask.delayed(y), shape=(n,), dtype=np.float64))
        return dxgb.DaskDMatrix(
            self.client, da.concatenate(features), da.concatenate(labels), missing=np.nan
        )


def _latest_labels(rows: Rows) -> np.ndarray:
    return rows.latest_labels()


@dataclass
class DaskSplit:
    """One target's split: fold and train stay on the workers; validation and holdout are here."""

    split: Split3  # fold / train are RemoteRows
    remote_validation: RemoteRows


class DaskPanel:
    """Every target's rows, built on the workers per customer-id range (see module doc)."""

    def __init__(
        self,
        cluster: Cluster,
        engine: Engine,
        database_url: str,
        plan: tasks.Plan,
        chunk_customers: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.client = cluster.client
        self.database_url = database_url
        self.plan = plan
        self.ranges = self.ranges_of(engine, chunk_customers)
        addresses = sorted(self.client.scheduler_info()["workers"])
        self.workers = [addresses[i % len(addresses)] for i in range(len(self.ranges))]
        self.parts = [
            self.client.submit(
                tasks.partition_rows, database_url, lo, hi, plan, workers=[worker], pure=False
            )
            for (lo, hi), worker in zip(self.ranges, self.workers, strict=True)
        ]
        self._rows: dict[str, RemoteRows] = {}

    @staticmethod
    def ranges_of(engine: Engine, chunk_customers: int | None = None) -> list[tuple[int, int]]:
        """The customer-id ranges, one partition each."""
        return id_ranges(engine) if chunk_customers is None else id_ranges(engine, chunk_customers)

    def rows(self, target: str) -> RemoteRows:
        """One target's rows (all cutoffs), per partition."""
        if target not in self._rows:
            whole = RemoteRows(self.client, self.parts, self.workers, [0] * len(self.parts))
            self._rows[target] = whole.derive(tasks.target_rows, target)
        return self._rows[target]

    def split(
        self,
        target: str,
        horizon_days: int,
        holdout_fraction: float,
        split: Split,
        validation_fraction: float,
        seed: int,
    ) -> DaskSplit:
        """`split_rows` over every partition: the fold start is decided on the summed counts."""
        rows = self.rows(target)
        cutoffs = self.plan[target][0]
        counts = self.client.gather(
            rows._map(
                tasks.fitting_counts,
                len(cutoffs),
                holdout_fraction,
                split,
                validation_fraction,
                seed,
            )
        )
        total = np.sum(counts, axis=0) if counts else np.zeros(len(cutoffs), dtype=np.int64)
        first = fold_start_from_counts(total, cutoffs, horizon_days)
        gap = 0 if first is None else (cutoffs[0] - cutoffs[first]).days
        splits = rows.derive(
            split_rows,  # fold_start (decided over all partitions) is its 8th argument
            cutoffs,
            horizon_days,
            holdout_fraction,
            split,
            validation_fraction,
            seed,
            first,
            sized=False,
        )
        part = {
            name: splits.derive(tasks.part_of, name)
            for name in ("fold", "validation", "train", "holdout")
        }
        validation = part["validation"]
        return DaskSplit(
            Split3(
                fold=part["fold"],  # type: ignore[arg-type]
                validation=validation.gather(),
                train=part["train"],  # type: ignore[arg-type]
                holdout=part["holdout"].gather(),
                gap_days=gap,
            ),
            validation,
        )

    # What the single-node Panel answers from a full matrix, answered per partition.

    def _at(self, cutoff: dt.datetime) -> tuple[RemoteRows, int]:
        for target, (cutoffs, _, _) in self.plan.items():
            if cutoff in cutoffs:
                return self.rows(target), cutoffs.index(cutoff)
        raise KeyError(f"no target has the cutoff {cutoff.isoformat()}")

    def buyers_at(self, cutoff: dt.datetime) -> int:
        rows, index = self._at(cutoff)
        return int(sum(self.client.gather(rows._map(_buyers, index))))

    def sample(self, cutoff: dt.datetime, limit: int) -> np.ndarray:
        rows, index = self._at(cutoff)
        n = int(sum(self.client.gather(rows._map(_count, index))))
        parts = self.client.gather(rows._map(_sample, index, bgnbd_share(n, limit)))
        return np.vstack([p.values for p in parts]) if parts else np.empty((0, len(FEATURE_NAMES)))

    def served(self, cutoff: dt.datetime, predictor: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predictions for every customer as of a planned `cutoff` (the "now" entry for
        `as_of`), computed on the workers from the features they already hold.

        The artifact's files travel with the tasks: a remote worker need not see the client's
        model directory.
        """
        directory = Path(predictor.directory)
        files = {
            p.name: p.read_bytes()
            for p in directory.iterdir()
            if p.name == "manifest.json" or p.suffix == ".onnx"
        }
        shipped = self.client.scatter(files, broadcast=True)
        rows, index = self._at(cutoff)
        parts = self.client.gather(rows._map(served_rows, shipped, index))
        clv = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
        churn = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
        return clv, churn

    def at(self, cutoff: dt.datetime) -> FeatureMatrix:
        raise NotImplementedError(
            f"a Dask panel never gathers every customer's features ({cutoff.isoformat()})"
        )


def _buyers(rows: Rows, index: int) -> int:
    at = rows.cutoff == index
    return int((rows.features[at, FEATURE_NAMES.index("orders")] > 0).sum())


def _count(rows: Rows, index: int) -> int:
    return int((rows.cutoff == index).sum())


def _sample(rows: Rows, index: int, share: float) -> FeatureMatrix:
    at = Rows(
        [c for c, keep in zip(rows.customer_ids, rows.cutoff == index, strict=True) if keep],
        np.zeros(int((rows.cutoff == index).sum()), dtype=np.int64),
        rows.features[rows.cutoff == index],
        rows.label[rows.cutoff == index],
    )
    return tasks.latest_sample(at, share)


_PREDICTORS: dict[str, Any] = {}


def served_rows(rows: Rows, files: dict[str, bytes], index: int) -> tuple[np.ndarray, np.ndarray]:
    """(CLV, churn probability) served for a partition's customers at its cutoff `index`."""
    import hashlib

    from app.scoring.predictor import Predictor

    key = hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()
    if key not in _PREDICTORS:
        directory = Path(tempfile.mkdtemp(prefix="clv-artifact-"))
        for name, content in files.items():
            (directory / name).write_bytes(content)
        _PREDICTORS[key] = Predictor(directory)
    features = rows.features[rows.cutoff == index]
    if not len(features):
        return np.empty(0), np.empty(0)
    predictions = _PREDICTORS[key].predict(features)
    return predictions.clv, predictions.churn_probability
