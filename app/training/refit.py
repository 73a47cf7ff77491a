"""One target fitted the `clv train` way: an early-stopped fold model on the older cutoffs,
judged out of time, then a refit on every row with the fold's round count; and the
post-processing (CLV scale, churn calibration) the fold chose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from app.artifacts import Calibration
from app.training.dataset import Split3
from app.training.export import native_predict
from app.training.fit import fit_early_stopping, fit_rounds, params
from app.training.options import TrainOptions


@dataclass
class Fitted:
    """One target: the out-of-time fold model, the final refit and what the fold decided."""

    split: Split3
    rounds: int
    fold_validation: np.ndarray  # fold-model predictions on the validation rows
    fold_holdout: np.ndarray  # fold-model predictions on the holdout rows
    final: xgb.Booster


@dataclass(frozen=True)
class PostProcessing:
    """Post-processing chosen out of time: the applied CLV scale and the churn calibration."""

    clv_scale: float
    clv_scale_out_of_time: float
    calibration: Calibration
    calibration_check: dict[str, float]


def fit_target(target: str, split: Split3, options: TrainOptions) -> Fitted:
    parameters = params(target, options.seed, options.threads)
    name = {"clv": "CLV", "churn": "churn", "orders": "orders", "propensity": "propensity"}[target]
    fold, rounds = fit_early_stopping(
        parameters, split.fold, split.validation, f"{name} (out-of-time fold)", options.progress
    )
    final = fit_rounds(parameters, split.train, rounds, f"{name} (all rows)", options.progress)
    return Fitted(
        split=split,
        rounds=rounds,
        fold_validation=native_predict(fold, split.validation.features),
        fold_holdout=native_predict(fold, split.holdout.features),
        final=final,
    )
