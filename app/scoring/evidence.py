"""What a prediction rests on: how much history the customer has, and whether its features lie
inside the ranges the model was trained on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.features.definitions import FEATURE_INDEX, FEATURE_NAMES

Basis = Literal["history", "no_orders", "no_history"]

#: Said with every `no_history` prediction, so nobody reads its numbers as a forecast.
NO_HISTORY_NOTICE = (
    "no events up to as_of: the model never saw a customer without history, so these numbers "
    "are its answer for an all-zero feature vector (a prior), not a forecast for this customer"
)


_ORDERS = FEATURE_INDEX["orders"]
_BASES = np.array(["history", "no_orders", "no_history"], dtype=object)


def prediction_bases(n_events: np.ndarray, features: np.ndarray) -> list[Basis]:
    """Per row: `no_history` (no event up to as_of), `no_orders` (behaviour only) or `history`."""
    if len(features) == 1:  # one prediction: the same rule on Python floats
        events, orders_one = float(np.asarray(n_events)[0]), float(features[0, _ORDERS])
        one: Basis = "no_history" if events <= 0 else "no_orders" if orders_one <= 0 else "history"
        return [one]
    orders = features[:, FEATURE_INDEX["orders"]]
    index = np.where(np.asarray(n_events) <= 0, 2, np.where(orders <= 0, 1, 0))
    labels: list[Basis] = _BASES[index].tolist()
    return labels


@dataclass(frozen=True)
class OutOfRange:
    """One feature value outside the [min, max] the model saw in training."""

    feature: str
    value: float
    training_min: float
    training_max: float


class TrainingRanges:
    """The manifest's per-feature training ranges as arrays; features without one never flag."""

    def __init__(self, ranges: Mapping[str, Sequence[float]]) -> None:
        self.low = np.full(len(FEATURE_NAMES), -np.inf)
        self.high = np.full(len(FEATURE_NAMES), np.inf)
        for name, bounds in ranges.items():
            index = FEATURE_INDEX.get(name)
            if index is not None and len(bounds) == 2:
                self.low[index], self.high[index] = float(bounds[0]), float(bounds[1])
        self.known = bool(ranges)

    def outside(self, features: np.ndarray) -> np.ndarray:
        """A boolean matrix: True where a value lies outside its feature's training range."""
        if not self.known:
            return np.zeros(features.shape, dtype=bool)
        return (features < self.low) | (features > self.high)

    def counts(self, features: np.ndarray) -> dict[str, int]:
        """How many rows have each feature out of range (features with none are left out)."""
        outside = self.outside(features)
        if not outside.any():  # the common case: nothing to count
            return {}
        per_feature = outside.sum(axis=0)
        return {FEATURE_NAMES[i]: int(per_feature[i]) for i in np.flatnonzero(per_feature)}

    def flags(self, row: np.ndarray) -> list[OutOfRange]:
        """The out-of-range features of one feature vector, in feature order."""
        mask = self.outside(row.reshape(1, -1))[0]
        return [
            OutOfRange(FEATURE_NAMES[i], float(row[i]), float(self.low[i]), float(self.high[i]))
            for i in np.flatnonzero(mask)
        ]
