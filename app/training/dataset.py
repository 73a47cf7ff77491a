"""Training rows: which cutoffs, which customers, features as of each cutoff and labels after it.

Every array here is in a fixed order that depends on the data only, never on internal ids or on
the order rows were loaded: cutoffs newest first, customers by external id within a cutoff.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine
from tqdm import tqdm

from app.features.definitions import FEATURE_NAMES
from app.features.repository import FeatureMatrix, offline_matrix
from app.training.repository import window_labels

Split = Literal["hash", "protocol-a"]

#: A cutoff needs this much history before it (else its rows describe nobody but newcomers).
MIN_HISTORY_DAYS = 30


def hash_share(customer_id: str, salt: str) -> int:
    """A stable pseudo-random number in [0, 10,000) per (customer, salt)."""
    return int(hashlib.sha256(f"{salt}:{customer_id}".encode()).hexdigest()[:12], 16) % 10_000


def holdout_mask(customer_ids: list[str], fraction: float, split: Split) -> np.ndarray:
    """True for holdout customers: a stable hash, or PROTOCOL.md's exact test half."""
    if split == "protocol-a":
        return np.array(
            [int(hashlib.sha256(c.encode()).hexdigest(), 16) % 2 == 1 for c in customer_ids],
            dtype=bool,
        )
    return np.array(
        [hash_share(c, "holdout") < fraction * 10_000 for c in customer_ids], dtype=bool
    )


def validation_mask(customer_ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """True for the (non-holdout) customers whose rows drive early stopping and calibration."""
    return np.array(
        [hash_share(c, f"validation{seed}") < fraction * 10_000 for c in customer_ids], dtype=bool
    )


def training_cutoffs(
    as_of: dt.datetime,
    horizon_days: int,
    stack: int,
    step_days: int,
    first_event: dt.datetime | None,
) -> list[dt.datetime]:
    """Up to `stack` cutoffs, newest (as_of - horizon) first, spread over the whole history.

    The spacing is `step_days`, widened so that the cutoffs reach back to the first event (plus
    MIN_HISTORY_DAYS): the rows then cover young and old customers, not only the latest months.
    """
    latest = as_of - dt.timedelta(days=horizon_days)
    step = step_days
    if first_event is not None and stack > 1:
        span = (latest - first_event).days - MIN_HISTORY_DAYS
        step = max(step_days, span // (stack - 1)) if span > 0 else step_days
    cutoffs = [latest - dt.timedelta(days=k * step) for k in range(stack)]
    if first_event is None:
        return cutoffs
    earliest = first_event + dt.timedelta(days=MIN_HISTORY_DAYS)
    return [c for i, c in enumerate(cutoffs) if i == 0 or c >= earliest]


@dataclass
class Rows:
    """Stacked training rows of one target (all cutoffs), with their customers and cutoff index."""

    customer_ids: list[str]
    cutoff: np.ndarray  # index into the cutoff list, 0 = latest
    features: np.ndarray
    label: np.ndarray

    def take(self, mask: np.ndarray) -> Rows:
        """The rows where `mask` is True, in the same order."""
        ids = [c for c, keep in zip(self.customer_ids, mask, strict=True) if keep]
        return Rows(ids, self.cutoff[mask], self.features[mask], self.label[mask])

    def __len__(self) -> int:
        return len(self.customer_ids)

    def latest_labels(self) -> np.ndarray:
        """The labels of the latest cutoff's rows."""
        latest: np.ndarray = self.label[self.cutoff == 0]
        return latest

    def min_max(self) -> np.ndarray | None:
        """[min; max] of every feature over the rows (None when there are none)."""
        if not len(self):
            return None
        return np.vstack([self.features.min(axis=0), self.features.max(axis=0)])


def bgnbd_share(n: int, limit: int) -> float:
    """The hash share (of 10,000) that keeps about `limit` of `n` customers (all when n <= limit)."""
    return 10_000.0 if n <= limit else limit / n * 10_000


def bgnbd_sample(customer_ids: list[str], values: np.ndarray, limit: int) -> np.ndarray:
    """About `limit` rows picked by a hash of the customer id (all of them when fewer)."""
    if len(values) <= limit:
        return values
    share = bgnbd_share(len(values), limit)
    keep = np.array([hash_share(c, "bgnbd") < share for c in customer_ids], dtype=bool)
    sample: np.ndarray = values[keep]
    return sample


class Panel:
    """Feature matrices and labels per cutoff, computed once and shared by both targets."""

    def __init__(self, engine: Engine, progress: bool) -> None:
        self.engine = engine
        self.progress = progress
        self.features: dict[dt.datetime, FeatureMatrix] = {}
        self.labels: dict[tuple[dt.datetime, int], tuple[np.ndarray, np.ndarray]] = {}

    def at(self, cutoff: dt.datetime) -> FeatureMatrix:
        """Every known customer's features as of `cutoff`, in external-id order."""
        if cutoff not in self.features:
            self.features[cutoff] = offline_matrix(self.engine, cutoff)
        return self.features[cutoff]

    def buyers_at(self, cutoff: dt.datetime) -> int:
        """Customers with at least one order by `cutoff`."""
        matrix = self.at(cutoff)
        return (
            int((matrix.values[:, FEATURE_NAMES.index("orders")] > 0).sum()) if len(matrix) else 0
        )

    def sample(self, cutoff: dt.datetime, limit: int) -> np.ndarray:
        """Features at `cutoff` of about `limit` customers picked by hash (the BG/NBD fit set)."""
        matrix = self.at(cutoff)
        return bgnbd_sample(matrix.customer_ids, matrix.values, limit)

    def served(self, cutoff: dt.datetime, predictor: Any) -> tuple[np.ndarray, np.ndarray]:
        """(CLV, churn probability) `predictor` serves for every customer as of `cutoff`."""
        matrix = self.at(cutoff)
        if not len(matrix):
            return np.empty(0), np.empty(0)
        predictions = predictor.predict(matrix.values)
        return predictions.clv, predictions.churn_probability

    def window(self, cutoff: dt.datetime, days: int) -> tuple[np.ndarray, np.ndarray]:
        """(net revenue, orders) of each customer of `at(cutoff)` in (cutoff, cutoff + days]."""
        key = (cutoff, days)
        if key not in self.labels:
            self.labels[key] = window_labels(
                self.engine, cutoff, days, self.at(cutoff).customer_ids
            )
        return self.labels[key]

    def rows(
        self,
        cutoffs: list[dt.datetime],
        days: int,
        label: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> Rows:
        """Rows of every cutoff stacked (newest first), labelled by `label(net, orders)`."""
        ids: list[str] = []
        index, blocks, labels = [], [], []
        for i, cutoff in enumerate(
            tqdm(
                cutoffs,
                desc=f"rows ({days}-day labels)",
                disable=None if self.progress else True,
                file=sys.stderr,
            )
        ):
            matrix = self.at(cutoff)
            net, orders = self.window(cutoff, days)
            ids += matrix.customer_ids
            index.append(np.full(len(matrix), i))
            blocks.append(matrix.values.reshape(len(matrix), len(FEATURE_NAMES)))
            labels.append(label(net, orders))
        return Rows(
            ids, np.concatenate(index), np.vstack(blocks), np.concatenate(labels).astype(np.float64)
        )


def clv_label(net: np.ndarray, _orders: np.ndarray) -> np.ndarray:
    """CLV label: net revenue in the window (see app.training.repository for refunds)."""
    return net


def churn_label(_net: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Churn label: 1 when the customer placed no order in the window."""
    churned: np.ndarray = (orders == 0).astype(np.float64)
    return churned


def orders_label(_net: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Expected-orders label: orders placed in the window (issue 11)."""
    return orders.astype(np.float64)


def propensity_label(_net: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Propensity label: 1 when the customer placed at least one order in the window."""
    bought: np.ndarray = (orders > 0).astype(np.float64)
    return bought


@dataclass
class Split3:
    """One target's rows cut three ways (see docs/accuracy.md, "Out-of-time validation")."""

    fold: Rows  # fitting rows of the out-of-time fold: train customers, cutoffs <= latest - gap
    validation: Rows  # latest-cutoff rows the fold model never saw labels of: judge the fold
    train: Rows  # every non-holdout row at every cutoff: the final refit
    holdout: Rows  # holdout customers at the latest cutoff: reported, never fitted
    gap_days: int  # latest cutoff minus the newest fold cutoff (0 = in-time fallback)


def split_rows(
    rows: Rows,
    cutoffs: list[dt.datetime],
    horizon_days: int,
    holdout_fraction: float,
    split: Split,
    validation_fraction: float,
    seed: int,
    fold_start: int | Literal["auto"] | None = "auto",
) -> Split3:
    """Holdout / validation customers by hash; the out-of-time fold by cutoff (see Split3).

    `fold_start` is the fold's newest cutoff index when already decided over every row (a Dask
    partition holds only some of them: app.distributed.rows); "auto" decides it from `rows`.
    """
    holdout, validation = split_masks(rows, holdout_fraction, split, validation_fraction, seed)
    latest = rows.cutoff == 0
    fitting = ~holdout & ~validation
    first = (
        _fold_start(rows, cutoffs, horizon_days, fitting) if fold_start == "auto" else fold_start
    )
    if first is None:
        fold_mask, gap = fitting, 0
    else:
        fold_mask, gap = fitting & (rows.cutoff >= first), (cutoffs[0] - cutoffs[first]).days
    # Whose latest-cutoff rows judge the fold: with a full horizon of gap no fitting label
    # reaches past the latest cutoff, so every non-holdout customer there is out of time for
    # the fold model (a larger, steadier sample); with a shorter gap only the validation
    # customers are, as their labels never entered the fit.
    judge = ~holdout if first is not None and gap >= horizon_days else validation
    return Split3(
        fold=rows.take(fold_mask),
        validation=rows.take(judge & latest),
        train=rows.take(~holdout),
        holdout=rows.take(holdout & latest),
        gap_days=gap,
    )


def split_masks(
    rows: Rows, holdout_fraction: float, split: Split, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(holdout, validation) masks of rows: stable hashes of the customer ids."""
    holdout = holdout_mask(rows.customer_ids, holdout_fraction, split)
    validation = validation_mask(rows.customer_ids, validation_fraction, seed) & ~holdout
    return holdout, validation


def fold_start_from_counts(
    counts: np.ndarray, cutoffs: list[dt.datetime], horizon_days: int
) -> int | None:
    """`_fold_start` from the fitting rows' count per cutoff index (summed over partitions)."""
    index = np.repeat(np.arange(len(counts)), counts)
    rows = Rows([], index, np.empty((len(index), 0)), np.empty(len(index)))
    return _fold_start(rows, cutoffs, horizon_days, np.ones(len(index), dtype=bool))


def _fold_start(
    rows: Rows, cutoffs: list[dt.datetime], horizon_days: int, fitting: np.ndarray
) -> int | None:
    """The newest cutoff index of the out-of-time fold, None when there is no earlier cutoff.

    Ideally the fold's newest cutoff is `horizon` before the latest one: its labels then end
    where the validation window starts, exactly the gap between the final model's latest
    cutoff and serving time. When history is too short for that, the fold takes the largest
    gap that still keeps at least a third of the fitting rows.
    """
    counts = np.bincount(rows.cutoff[fitting], minlength=len(cutoffs))
    total = counts.sum()
    candidates = [
        k for k in range(1, len(cutoffs)) if counts[k:].sum() >= max(total / 3, 1) and counts[k]
    ]
    if not candidates:
        return None
    for k in candidates:
        if (cutoffs[0] - cutoffs[k]).days >= horizon_days:
            return k
    return max(candidates)


def feature_ranges(*parts: Any) -> dict[str, list[float]]:
    """[min, max] of every feature over the rows the final models were fitted on.

    `parts` are feature arrays, `Rows`, or anything with their `min_max()` (rows held by Dask
    workers: app.distributed.rows).
    """
    blocks = [
        block
        for block in (part if isinstance(part, np.ndarray) else part.min_max() for part in parts)
        if block is not None and len(block)
    ]
    if not blocks:
        return {}
    stacked = np.vstack(blocks)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    return {
        name: [float(lo), float(hi)] for name, lo, hi in zip(FEATURE_NAMES, low, high, strict=True)
    }
