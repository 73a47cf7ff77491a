"""Exact per-feature explanations (TreeSHAP) from the artifact's native XGBoost models.

Contributions are in the models' margin units: log of expected revenue for CLV (so a
contribution c multiplies the prediction by e^c) and log-odds for churn. The base value plus all
contributions equals the raw margin, exactly as XGBoost's `pred_contribs` defines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.features.definitions import FEATURES

if TYPE_CHECKING:
    # Imported inside the functions: xgboost imports scikit-learn and pandas when they are
    # installed (seconds), and the API must start without them (tests/ops/test_api_imports.py).
    import xgboost as xgb


@dataclass(frozen=True)
class Contribution:
    """One feature's push on one prediction."""

    feature: str
    description: str
    unit: str
    value: float
    contribution: float


@dataclass(frozen=True)
class Explanation:
    """Base value, per-feature contributions (all of them), and the raw margin they add up to."""

    base_value: float
    raw_margin: float
    contributions: list[Contribution]

    def top(self, n: int) -> list[Contribution]:
        """The n contributions with the largest absolute effect."""
        return sorted(self.contributions, key=lambda c: abs(c.contribution), reverse=True)[:n]


def load_booster(path: Path) -> xgb.Booster:
    """A native booster for explanations: single-threaded (it serves one row at a time)."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(path)
    booster.set_param({"nthread": 1})
    return booster


def explain(booster: xgb.Booster, features: np.ndarray) -> list[Explanation]:
    """TreeSHAP explanations of every row of `features`."""
    import xgboost as xgb

    matrix = xgb.DMatrix(np.asarray(features, dtype=np.float32))
    contributions = np.asarray(booster.predict(matrix, pred_contribs=True), dtype=np.float64)
    margins = np.asarray(booster.predict(matrix, output_margin=True), dtype=np.float64)
    out = []
    for row, values, margin in zip(contributions, features, margins, strict=True):
        out.append(
            Explanation(
                base_value=float(row[-1]),
                raw_margin=float(margin),
                contributions=[
                    Contribution(f.name, f.description, f.unit, float(v), float(c))
                    for f, v, c in zip(FEATURES, values, row[:-1], strict=True)
                ],
            )
        )
    return out


def _format_value(value: float, unit: str, currency: str) -> str:
    if unit == "currency":
        return f"{value:,.2f} {currency}"
    if unit == "currency/day":
        return f"{value:,.2f} {currency}/day"
    if unit == "ratio":
        return f"{value:.2f}"
    return f"{value:,.1f} {unit}" if value % 1 else f"{value:,.0f} {unit}"


def clv_sentence(c: Contribution, currency: str) -> str:
    """Plain words for a CLV contribution (a multiplicative effect on expected revenue)."""
    factor = math.exp(c.contribution)
    direction = "raises" if c.contribution > 0 else "lowers"
    return (
        f"{c.description}: {_format_value(c.value, c.unit, currency)} {direction} expected revenue "
        f"(x{factor:.2f})"
    )


def churn_sentence(c: Contribution, currency: str) -> str:
    """Plain words for a churn contribution (a multiplicative effect on the odds of churning)."""
    factor = math.exp(c.contribution)
    direction = "raises" if c.contribution > 0 else "lowers"
    return (
        f"{c.description}: {_format_value(c.value, c.unit, currency)} {direction} the odds of "
        f"churning (x{factor:.2f})"
    )
