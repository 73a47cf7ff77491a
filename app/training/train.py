"""`clv train`: point-in-time rows, out-of-time validation, XGBoost CLV + churn, ONNX, promotion.

Rows: for each cutoff c (the latest is as_of - horizon, older ones spread back over the history)
the features of every customer known by c (the same definitions the API serves) and labels from
(c, c + horizon]. Holdout customers (a deterministic hash) never train; they are evaluated at the
latest cutoff beside the baselines. The recipe is judged out of time first: a fold model fitted
only on older cutoffs is scored at the latest cutoff; its early-stopping round count, CLV scale
and churn calibration are then used to refit on every row (docs/accuracy.md).

Nothing half-written survives a failure: the version directory is built under a temporary name
inside the model directory and renamed when complete.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from sqlalchemy import Engine

from app.artifacts import (
    CHURN_NATIVE,
    CHURN_ONNX,
    CLV_NATIVE,
    CLV_ONNX,
    REPORT,
    Calibration,
    Manifest,
    promote,
    read_manifest,
    write_manifest,
)
from app.features.definitions import FEATURE_NAMES
from app.features.repository import fingerprint
from app.scoring.predictor import Predictor, calibrate
from app.training import evaluate as evaluation
from app.training.calibration import choose_calibration, clv_scale
from app.training.dataset import (
    Panel,
    Split,
    Split3,
    churn_label,
    clv_label,
    feature_ranges,
    holdout_mask,
    split_rows,
    training_cutoffs,
    validation_mask,
)
from app.training.export import check_parity, native_predict, to_onnx
from app.training.fit import fit_early_stopping, fit_rounds, importance, params
from app.training.promotion import decide
from app.training.provenance import code_version, quantiles, reproduce_section
from app.training.reporting import write_training_report
from app.training.repository import data_fingerprint

__all__ = [
    "Split",
    "TrainOptions",
    "TrainResult",
    "TrainingFailed",
    "holdout_mask",
    "train",
    "validation_mask",
]
logger = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """Training produced no usable artifact (no data, failed parity...)."""


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
    threads: int = field(default_factory=lambda: min(os.cpu_count() or 1, 2))
    currency: str = "USD"
    progress: bool = True
    promote: bool = True  # False: write the artifact, never move `current` (backtests)


@dataclass
class TrainResult:
    """The artifact written and whether it now serves."""

    directory: Path
    manifest: Manifest
    promoted: bool
    reason: str


@dataclass
class _Fitted:
    """One target: the out-of-time fold model, the final refit and what the fold decided."""

    split: Split3
    rounds: int
    fold_validation: np.ndarray  # fold-model predictions on the validation rows
    fold_holdout: np.ndarray  # fold-model predictions on the holdout rows
    final: xgb.Booster


@dataclass(frozen=True)
class _Post:
    """Post-processing chosen out of time: the applied CLV scale and the churn calibration."""

    clv_scale: float
    clv_scale_out_of_time: float
    calibration: Calibration
    calibration_check: dict[str, float]


def _fit_target(target: str, split: Split3, options: TrainOptions) -> _Fitted:
    parameters = params(target, options.seed, options.threads)
    name = "CLV" if target == "clv" else "churn"
    fold, rounds = fit_early_stopping(
        parameters, split.fold, split.validation, f"{name} (out-of-time fold)", options.progress
    )
    final = fit_rounds(parameters, split.train, rounds, f"{name} (all rows)", options.progress)
    return _Fitted(
        split=split,
        rounds=rounds,
        fold_validation=native_predict(fold, split.validation.features),
        fold_holdout=native_predict(fold, split.holdout.features),
        final=final,
    )


def train(engine: Engine, options: TrainOptions) -> TrainResult:
    """Build rows, validate out of time, refit, export, evaluate, write atomically, maybe promote."""
    started = time.perf_counter()
    say = (lambda m: sys.stderr.write(m + "\n")) if options.progress else logger.info
    data = data_fingerprint(engine)
    first = dt.datetime.fromisoformat(data["min_occurred_at"]) if data["min_occurred_at"] else None
    horizons = {"clv": options.clv_horizon_days, "churn": options.churn_horizon_days}
    cutoffs = {
        target: training_cutoffs(options.as_of, days, options.stack, options.stack_step_days, first)
        for target, days in horizons.items()
    }
    panel = Panel(engine, options.progress)
    rows = {
        "clv": panel.rows(cutoffs["clv"], horizons["clv"], clv_label),
        "churn": panel.rows(cutoffs["churn"], horizons["churn"], churn_label),
    }
    if not len(rows["clv"]) or not len(rows["churn"]):
        raise TrainingFailed(
            f"no customers with events before the cutoffs {cutoffs['clv'][0]:%Y-%m-%d} / "
            f"{cutoffs['churn'][0]:%Y-%m-%d}: load data first or pick a later --as-of"
        )
    splits: dict[str, Split3] = {}
    for target in ("clv", "churn"):
        splits[target] = split_rows(
            rows[target],
            cutoffs[target],
            horizons[target],
            options.holdout_fraction,
            options.split,
            options.validation_fraction,
            options.seed,
        )
        split = splits[target]
        if min(len(split.fold), len(split.validation), len(split.train), len(split.holdout)) == 0:
            raise TrainingFailed(
                f"too few customers to split for {target}: need fitting, validation and holdout rows"
            )
    say(
        f"rows: CLV {len(rows['clv']):,} over {len(cutoffs['clv'])} cutoffs, churn {len(rows['churn']):,}; "
        f"out-of-time gap {splits['clv'].gap_days} / {splits['churn'].gap_days} days"
    )
    fitted = {target: _fit_target(target, splits[target], options) for target in splits}
    clv, churn = fitted["clv"], fitted["churn"]
    # The fold's level correction is applied only when the fold replays the serving gap (a
    # shorter gap measured over other seasons says little about the next H days).
    out_of_time_scale = clv_scale(clv.fold_validation, clv.split.validation.label)
    scale = out_of_time_scale if clv.split.gap_days >= options.clv_horizon_days else 1.0
    calibration, calibration_check = choose_calibration(
        churn.fold_validation, churn.split.validation.label, churn.split.validation.customer_ids
    )

    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    version = f"{created:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    options.model_dir.mkdir(parents=True, exist_ok=True)
    building = options.model_dir / f".building-{version}"
    building.mkdir()
    try:
        promoted, reason = _write_artifact(
            building,
            version,
            created,
            options,
            panel,
            cutoffs,
            data,
            fitted,
            _Post(scale, out_of_time_scale, calibration, calibration_check),
            started,
            say,
        )
        directory = options.model_dir / version
        os.replace(building, directory)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if promoted and options.promote:
        promote(options.model_dir, version)
    if not options.progress:
        logger.info("model %s: %s", version, reason)
    return TrainResult(
        directory=directory, manifest=read_manifest(directory), promoted=promoted, reason=reason
    )


def _write_artifact(
    directory: Path,
    version: str,
    created: dt.datetime,
    options: TrainOptions,
    panel: Panel,
    cutoffs: dict[str, list[dt.datetime]],
    data: dict[str, Any],
    fitted: dict[str, _Fitted],
    post: _Post,
    started: float,
    say: Any,
) -> tuple[bool, str]:
    """Export, check parity, evaluate in and out of time, write manifest and report."""
    scale, calibration = post.clv_scale, post.calibration
    clv, churn = fitted["clv"], fitted["churn"]
    holdout_clv, holdout_churn = clv.split.holdout, churn.split.holdout
    to_onnx(clv.final, len(FEATURE_NAMES), directory / CLV_ONNX)
    to_onnx(churn.final, len(FEATURE_NAMES), directory / CHURN_ONNX)
    clv.final.save_model(directory / CLV_NATIVE)
    churn.final.save_model(directory / CHURN_NATIVE)
    parity = check_parity(
        clv.final,
        churn.final,
        directory / CLV_ONNX,
        directory / CHURN_ONNX,
        np.vstack([holdout_clv.features, holdout_churn.features]),
    )
    say(
        f"ONNX parity on {parity.rows:,} holdout rows: CLV max rel diff {parity.clv_max_rel_diff:.2e}, "
        f"churn max abs diff {parity.churn_max_abs_diff:.2e} -> {'ok' if parity.passed else 'FAILED'}"
    )
    if not parity.passed:
        raise TrainingFailed(f"ONNX and XGBoost disagree beyond {parity.tolerance}: {parity}")

    rows_count = {
        f"{target}_{part}": len(getattr(fitted[target].split, part))
        for target in ("clv", "churn")
        for part in ("train", "fold", "validation", "holdout")
    }
    code = code_version()
    manifest = Manifest(
        version=version,
        created_at=created,
        code_version=code,
        as_of=options.as_of,
        clv_horizon_days=options.clv_horizon_days,
        churn_horizon_days=options.churn_horizon_days,
        currency=options.currency,
        feature_names=list(FEATURE_NAMES),
        feature_fingerprint=fingerprint(),
        cutoffs=cutoffs,
        split={
            "method": options.split,
            "holdout_fraction": 0.5 if options.split == "protocol-a" else options.holdout_fraction,
            "validation_fraction": options.validation_fraction,
            "seed": options.seed,
        },
        rows=rows_count,
        training={
            "clv_params": params("clv", options.seed, options.threads),
            "churn_params": params("churn", options.seed, options.threads),
            "clv_trees": clv.final.num_boosted_rounds(),
            "churn_trees": churn.final.num_boosted_rounds(),
            "clv_scale": scale,
            "clv_scale_out_of_time": post.clv_scale_out_of_time,
            "calibration_check": post.calibration_check,
            "nthread": options.threads,
            "xgboost": xgb.__version__,
        },
        churn_calibration=calibration,
        metrics={},
        clv_quantiles={},
        churn_quantiles={},
        parity=parity,
        files={
            "clv_onnx": CLV_ONNX,
            "churn_onnx": CHURN_ONNX,
            "clv_native": CLV_NATIVE,
            "churn_native": CHURN_NATIVE,
            "report": REPORT,
        },
        feature_ranges=feature_ranges(clv.split.train.features, churn.split.train.features),
        validation={
            "method": "out-of-time: fold model on older cutoffs, judged on validation customers "
            "at the latest cutoff; its rounds, CLV scale and Platt calibration are reused by the "
            "refit on all rows",
            **{f"{target}_gap_days": fitted[target].split.gap_days for target in ("clv", "churn")},
            **{f"{target}_rounds": fitted[target].rounds for target in ("clv", "churn")},
        },
        data=data,
        seeds={"boosting": options.seed, "validation_slice": options.seed},
        reproduce=reproduce_section(options, data, code),
    )
    write_manifest(directory, manifest)

    # In time: the final model through the served path (ONNX + manifest post-processing).
    predictor = Predictor(directory)
    importances = {"CLV": importance(clv.final)[:15], "Churn": importance(churn.final)[:15]}
    in_time = evaluation.evaluate(
        panel,
        cutoffs["clv"][0],
        cutoffs["churn"][0],
        holdout_clv,
        holdout_churn,
        (
            predictor.predict(holdout_clv.features).clv,
            predictor.predict(holdout_churn.features).churn_probability,
        ),
        importances,
        (options.clv_horizon_days, options.churn_horizon_days),
        options.baselines,
    )
    # Out of time: the fold model with the same post-processing, on the same holdout rows.
    fold_clv = np.maximum(clv.fold_holdout * scale, 0.0)
    fold_churn = churn.fold_holdout
    if calibration.method == "platt":
        fold_churn = calibrate(fold_churn, calibration.a, calibration.b)
    manifest.metrics = in_time.metrics
    manifest.metrics_out_of_time = {
        "model": evaluation.score(holdout_clv.label, holdout_churn.label, fold_clv, fold_churn),
        **{name: values for name, values in in_time.metrics.items() if name != "model"},
    }
    manifest.baseline_failures = in_time.failures
    for name, why in in_time.failures.items():
        say(f"baseline {name} not evaluated: {why}")

    now = panel.at(options.as_of)
    served = predictor.predict(now.values) if len(now) else None
    manifest.clv_quantiles = quantiles(served.clv if served else np.empty(0))
    manifest.churn_quantiles = quantiles(served.churn_probability if served else np.empty(0))
    promoted, reason = decide(
        options.model_dir,
        manifest.metrics_out_of_time,
        holdout_clv,
        holdout_churn,
        predictor,
        options.force,
        min(clv.split.gap_days, churn.split.gap_days),
    )
    manifest.promotion = {"promoted": promoted and options.promote, "reason": reason}
    manifest.training["seconds"] = round(time.perf_counter() - started, 2)
    write_manifest(directory, manifest)
    write_training_report(
        directory / REPORT, manifest, holdout_clv.label, holdout_churn.label, in_time.entries
    )
    return promoted, reason
