"""Exact per-feature explanations of the served models (docs/challengers.md, "Explanations").

XGBoost (the default family): TreeSHAP from the artifact's native boosters. Contributions are in
the models' margin units: log of expected revenue for CLV (so a contribution c multiplies the
prediction by e^c) and log-odds for churn. The base value plus all contributions equals the raw
margin, exactly as XGBoost's `pred_contribs` defines it.

A linear challenger (ridge CLV, logistic churn) serving a target: coefficient x standardised
input, from the explainer file training wrote beside its graph (`LinearExplainer`). The base
value is the intercept (the margin of a customer at the training mean of every standardised
feature); base + contributions = margin. Churn margins are log-odds as for XGBoost; the ridge's
margin is signed_log1p(CLV / smear), so e^c multiplies 1 + CLV / smear (close to CLV itself
for all but tiny predictions).

Any other served family (the MLPs) has no exact explanation: `explain=true` is refused with
ExplanationUnavailable rather than answered with another model's reasons.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.errors import AppError, FieldError
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


class ExplanationUnavailable(AppError):
    status, slug, title = 422, "explanation-unavailable", "No exact explanation for this model"

    def __init__(self, families: dict[str, str]) -> None:
        named = ", ".join(f"{target} by {family}" for target, family in sorted(families.items()))
        message = (
            f"the served model ({named}) has no exact per-feature explanation: only XGBoost "
            "(TreeSHAP) and linear models (coefficient x standardised input) do; ask without "
            "explain=true"
        )
        super().__init__(
            message,
            errors=[
                FieldError(
                    field="explain", pointer="#query/explain", message=message, code="unavailable"
                )
            ],
        )


@dataclass(frozen=True)
class LinearExplainer:
    """A linear challenger's exact explanation: margin = intercept + coef . z, where
    z = (signed_log1p(x imputed) - mean) / scale is the graph's standardised input."""

    median: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def load(cls, path: Path) -> LinearExplainer:
        """From the `<target>_linear.explain.json` file training wrote."""
        raw: dict[str, Any] = json.loads(path.read_text())
        return cls(
            median=np.asarray(raw["median"], dtype=np.float64),
            mean=np.asarray(raw["mean"], dtype=np.float64),
            scale=np.asarray(raw["scale"], dtype=np.float64),
            coef=np.asarray(raw["coef"], dtype=np.float64),
            intercept=float(raw["intercept"]),
        )

    def standardised(self, features: np.ndarray) -> np.ndarray:
        """The graph's preprocessing in numpy, on the same float32 inputs."""
        x = np.asarray(features, dtype=np.float32).astype(np.float64)
        x = np.where(np.isnan(x), self.median, x)
        return np.asarray(
            (np.sign(x) * np.log(1.0 + np.abs(x)) - self.mean) / self.scale, dtype=np.float64
        )

    def explain(self, features: np.ndarray) -> list[Explanation]:
        """Per-row explanations: base value = intercept, contribution_j = coef_j * z_j."""
        out = []
        for values, z in zip(features, self.standardised(features), strict=True):
            contributions = self.coef * z
            out.append(
                Explanation(
                    base_value=self.intercept,
                    raw_margin=float(self.intercept + contributions.sum()),
                    contributions=[
                        Contribution(f.name, f.description, f.unit, float(v), float(c))
                        for f, v, c in zip(FEATURES, values, contributions, strict=True)
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
