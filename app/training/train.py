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
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.artifacts import promote, read_manifest
from app.training.assemble import write_artifact
from app.training.calibration import choose_calibration, clv_scale, fit_intervals
from app.training.dataset import (
    Panel,
    Split3,
    churn_label,
    clv_label,
    orders_label,
    propensity_label,
    split_rows,
    training_cutoffs,
)
from app.training.eligibility import check_eligibility
from app.training.evaluate import BGNBD_FIT_SAMPLE
from app.training.intervals import expected_non_buyers, label_shift_weights
from app.training.options import TrainingFailed, TrainOptions, TrainResult
from app.training.refit import Fitted, PostProcessing, fit_target
from app.training.repository import data_fingerprint

logger = logging.getLogger(__name__)


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
    eligibility = check_eligibility(panel, options, cutoffs, rows, data)
    # Issue 11: orders over the CLV horizon at the CLV cutoffs (same rows, other label) and an
    # order within `propensity_days` at the churn cutoffs (features already computed there).
    rows["orders"] = panel.rows(cutoffs["clv"], horizons["clv"], orders_label)
    rows["propensity"] = panel.rows(cutoffs["churn"], options.propensity_days, propensity_label)
    target_cutoffs = {**cutoffs, "orders": cutoffs["clv"], "propensity": cutoffs["churn"]}
    target_days = {**horizons, "orders": horizons["clv"], "propensity": options.propensity_days}
    splits: dict[str, Split3] = {}
    for target in ("clv", "churn", "orders", "propensity"):
        splits[target] = split_rows(
            rows[target],
            target_cutoffs[target],
            target_days[target],
            options.holdout_fraction,
            options.split,
            options.validation_fraction,
            options.seed,
        )
        require_rows(target, splits[target])
    say(
        f"rows: CLV {len(rows['clv']):,} over {len(cutoffs['clv'])} cutoffs, churn {len(rows['churn']):,}; "
        f"out-of-time gap {splits['clv'].gap_days} / {splits['churn'].gap_days} days"
    )
    fitted = {target: fit_target(target, splits[target], options) for target in splits}
    return finish_training(
        options, panel, cutoffs, data, fitted, started, say, {"eligibility": eligibility}
    )


def require_rows(target: str, split: Any) -> None:
    """TrainingFailed unless every part of a target's split (fold, validation, train, holdout)
    has rows: single node and Dask refuse the same data with the same message."""
    if min(len(split.fold), len(split.validation), len(split.train), len(split.holdout)) == 0:
        raise TrainingFailed(
            f"too few customers to split for {target}: need fitting, validation and holdout rows"
        )


def finish_training(
    options: TrainOptions,
    panel: Any,
    cutoffs: dict[str, list[dt.datetime]],
    data: dict[str, Any],
    fitted: dict[str, Fitted],
    started: float,
    say: Callable[[str], object],
    extra: dict[str, Any],
) -> TrainResult:
    """After fitting, the same on one node and on Dask: the fold's level correction, churn
    calibration and CLV intervals, then the artifact written under a temporary name, renamed when
    complete, and promoted if not worse. `panel` is a Panel or the Dask panel (same methods)."""
    clv, churn = fitted["clv"], fitted["churn"]
    # The fold's level correction is applied only when the fold replays the serving gap (a
    # shorter gap measured over other seasons says little about the next H days).
    out_of_time_scale = clv_scale(clv.fold_validation, clv.split.validation.label)
    scale = out_of_time_scale if clv.split.gap_days >= options.clv_horizon_days else 1.0
    calibration, calibration_check = choose_calibration(
        churn.fold_validation, churn.split.validation.label, churn.split.validation.customer_ids
    )
    # The interval's calibration rows, moved to the share of non-buyers BG/NBD expects among the
    # customers known now (label shift): that share drifts between the fold's window and the
    # next one, and coverage follows it (docs/predictions.md).
    label = clv.split.validation.label
    non_buyers = expected_non_buyers(
        panel.sample(options.as_of, BGNBD_FIT_SAMPLE), options.clv_horizon_days
    )
    intervals = fit_intervals(
        np.maximum(clv.fold_validation * scale, 0.0),
        label,
        clv.split.gap_days,
        weights=label_shift_weights(label, non_buyers["share"]),
    )
    if intervals:
        intervals["non_buyers"] = {"fold_share": float(np.mean(label == 0)), **non_buyers}

    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    version = f"{created:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    options.model_dir.mkdir(parents=True, exist_ok=True)
    building = options.model_dir / f".building-{version}"
    building.mkdir()
    try:
        promoted, reason = write_artifact(
            building,
            version,
            created,
            options,
            panel,
            cutoffs,
            data,
            fitted,
            PostProcessing(scale, out_of_time_scale, calibration, calibration_check),
            started,
            say,
            {"clv_intervals": intervals, **extra},
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
