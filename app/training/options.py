"""What `clv train` is asked to do, what it returns, and how it fails."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from app.artifacts import Manifest
from app.training.dataset import Split


class TrainingFailed(RuntimeError):
    """Training produced no usable artifact (no data, failed parity...)."""


class NotEligible(TrainingFailed):
    """The data is too small or too short to learn from (minimums in docs/predictions.md)."""


@dataclass(frozen=True)
class TrainOptions:
    """What `clv train` was asked to do."""

    as_of: dt.datetime
    model_dir: Path
    clv_horizon_days: int = 365
    churn_horizon_days: int = 90
    holdout_fraction: float = 0.2
    split: Split = "hash"
    stack: int = 8
    stack_step_days: int = 30
    validation_fraction: float = 0.2
    seed: int = 0
    force: bool = False
    baselines: bool = True
    baseline_penalizer: float = 0.0  # BG/NBD + GG comparison; PROTOCOL.md fits without one
    threads: int = field(default_factory=lambda: min(os.cpu_count() or 1, 2))
    currency: str = "USD"
    progress: bool = True
    promote: bool = True  # False: write the artifact, never move `current` (backtests)
    challengers: bool = False  # also train ridge/logistic and MLP; serve the out-of-time best
    propensity_days: int = 30  # window of `order_probability` (issue 11)


@dataclass
class TrainResult:
    """The artifact written and whether it now serves."""

    directory: Path
    manifest: Manifest
    promoted: bool
    reason: str
