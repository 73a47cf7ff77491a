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
import math
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
    COMBINED_ONNX,
    ORDERS_NATIVE,
    ORDERS_ONNX,
    PROPENSITY_NATIVE,
    PROPENSITY_ONNX,
    REPORT,
    Calibration,
    Manifest,
    promote,
    read_manifest,
    write_manifest,
)
from app.features.definitions import FEATURE_NAMES
from app.features.repository import fingerprint
from app.scoring.predictor import Predictor, calibrate, clv_interval
from app.training import evaluate as evaluation
from app.training.calibration import choose_calibration, clv_scale, fit_intervals
from app.training.dataset import (
    MIN_HISTORY_DAYS,
    Panel,
    Split,
    Split3,
    churn_label,
    clv_label,
    feature_ranges,
    holdout_mask,
    orders_label,
    propensity_label,
    split_rows,
    training_cutoffs,
    validation_mask,
)
from app.training.export import (
    check_combined,
    check_parity,
    check_parity_one,
    combine,
    native_predict,
    to_onnx,
)
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


class NotEligible(TrainingFailed):
    """The data is too small or too short to learn from (minimums in docs/predictions.md)."""


#: Eligibility minimums (issue 11), checked before any fitting; why each is needed:
#: - history: the latest CLV / churn cutoff is as_of - horizon and needs MIN_HISTORY_DAYS of
#:   events before it, else its rows describe nothing but brand-new customers;
#: - customers with an order by the latest CLV cutoff: below a few hundred, the 20 % holdout
#:   and 20 % validation slices hold a few dozen buyers each, too few to rank or calibrate;
#: - buyers in the latest label window, and both churn classes: a target with (almost) one
#:   class or all-zero labels has nothing to learn, and its AUC / Gini is undefined.
MIN_CUSTOMERS_WITH_ORDERS = 200
MIN_BUYERS_IN_WINDOW = 30
MIN_CHURN_CLASS = 30
#: The combined graph runs the very same nodes: it must agree to float32 rounding.
COMBINED_TOLERANCE = 1e-6


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
    challengers: bool = False  # also train ridge/logistic and MLP; serve the out-of-time best
    propensity_days: int = 30  # window of `order_probability` (issue 11)


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
    name = {"clv": "CLV", "churn": "churn", "orders": "orders", "propensity": "propensity"}[target]
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
    intervals = fit_intervals(
        np.maximum(clv.fold_validation * scale, 0.0), clv.split.validation.label, clv.split.gap_days
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
            {"clv_intervals": intervals, "eligibility": eligibility},
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


def _challengers(
    directory: Path, options: TrainOptions, fitted: dict[str, _Fitted], post: _Post, say: Any
) -> Any:
    """Ridge/logistic and MLP challengers judged out of time beside XGBoost's fold model."""
    from app.training import challengers

    fold_churn = fitted["churn"].fold_holdout
    if post.calibration.method == "platt":
        fold_churn = calibrate(fold_churn, post.calibration.a, post.calibration.b)
    xgboost_out_of_time = evaluation.score(
        fitted["clv"].split.holdout.label,
        fitted["churn"].split.holdout.label,
        np.maximum(fitted["clv"].fold_holdout * post.clv_scale, 0.0),
        fold_churn,
    )
    return challengers.run(
        directory,
        fitted["clv"].split,
        fitted["churn"].split,
        options.seed,
        xgboost_out_of_time,
        evaluation.score,
        say,
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
    extra: dict[str, Any] | None = None,
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
    # Issue 11: the orders and propensity models pass the same gate.
    for target, onnx_name, native_name in (
        ("orders", ORDERS_ONNX, ORDERS_NATIVE),
        ("propensity", PROPENSITY_ONNX, PROPENSITY_NATIVE),
    ):
        booster = fitted[target].final
        to_onnx(booster, len(FEATURE_NAMES), directory / onnx_name)
        booster.save_model(directory / native_name)
        diffs, ok = check_parity_one(
            booster, directory / onnx_name, fitted[target].split.holdout.features, target
        )
        parity.extra[target] = diffs
        if not ok:
            raise TrainingFailed(f"ONNX and XGBoost disagree on {target}: {diffs}")

    rows_count = {
        f"{target}_{part}": len(getattr(fitted[target].split, part))
        for target in fitted
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
            "orders_params": params("orders", options.seed, options.threads),
            "propensity_params": params("propensity", options.seed, options.threads),
            "orders_trees": fitted["orders"].final.num_boosted_rounds(),
            "propensity_trees": fitted["propensity"].final.num_boosted_rounds(),
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
            "orders_onnx": ORDERS_ONNX,
            "propensity_onnx": PROPENSITY_ONNX,
            "orders_native": ORDERS_NATIVE,
            "propensity_native": PROPENSITY_NATIVE,
            "report": REPORT,
        },
        feature_ranges=feature_ranges(clv.split.train.features, churn.split.train.features),
        validation={
            "method": "out-of-time: fold model on older cutoffs, judged on validation customers "
            "at the latest cutoff; its rounds, CLV scale and Platt calibration are reused by the "
            "refit on all rows",
            **{f"{target}_gap_days": fitted[target].split.gap_days for target in fitted},
            **{f"{target}_rounds": fitted[target].rounds for target in fitted},
        },
        data=data,
        seeds={"boosting": options.seed, "validation_slice": options.seed},
        reproduce=reproduce_section(options, data, code),
        clv_intervals=(extra or {}).get("clv_intervals", {}),
        eligibility=(extra or {}).get("eligibility", {}),
        propensity_days=options.propensity_days,
    )
    outcome = _challengers(directory, options, fitted, post, say) if options.challengers else None
    if outcome is not None:
        from app.training.challengers import serve_champions

        serve_champions(outcome, directory, manifest)
    _combine_served(directory, manifest, holdout_clv.features, say)
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
    if outcome is not None:
        from app.training.challengers import record_out_of_time

        record_out_of_time(outcome, manifest)
    manifest.baseline_failures = in_time.failures
    if manifest.clv_intervals:
        # Issue 11: coverage of the 80 % interval on the holdout customers (never used to
        # calibrate it): out of time (fold model) and in time (the final model).
        manifest.clv_intervals.update(
            interval_coverage(fold_clv, holdout_clv.label, manifest.clv_intervals),
            coverage_80_in_time=interval_coverage(
                predictor.predict(holdout_clv.features).clv,
                holdout_clv.label,
                manifest.clv_intervals,
            )["coverage_80"],
        )
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


def check_eligibility(
    panel: Panel,
    options: TrainOptions,
    cutoffs: dict[str, list[dt.datetime]],
    rows: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """Refuse data too small or too short to learn from; else what the model is trained on.

    Raises NotEligible naming every minimum that is not met, with the figures.
    """
    first = dt.datetime.fromisoformat(data["min_occurred_at"]) if data["min_occurred_at"] else None
    horizon = max(options.clv_horizon_days, options.churn_horizon_days)
    history_days = (options.as_of - first).days if first is not None else 0
    latest = cutoffs["clv"][0]
    matrix = panel.at(latest)
    buyers = int((matrix.values[:, FEATURE_NAMES.index("orders")] > 0).sum()) if len(matrix) else 0
    clv_latest = rows["clv"].label[rows["clv"].cutoff == 0]
    churn_latest = rows["churn"].label[rows["churn"].cutoff == 0]
    in_window = int((clv_latest > 0).sum())
    churned, stayed = int(churn_latest.sum()), int((churn_latest == 0).sum())
    needed_days = horizon + MIN_HISTORY_DAYS
    problems = []
    if history_days < needed_days:
        problems.append(
            f"history of {history_days} days up to --as-of {options.as_of:%Y-%m-%d}; need at least "
            f"{needed_days} (the longest horizon, {horizon}, + {MIN_HISTORY_DAYS} days before "
            "the latest cutoff)"
        )
    if buyers < MIN_CUSTOMERS_WITH_ORDERS:
        problems.append(
            f"{buyers} customers with an order by the latest CLV cutoff {latest:%Y-%m-%d}; "
            f"need at least {MIN_CUSTOMERS_WITH_ORDERS}"
        )
    if in_window < MIN_BUYERS_IN_WINDOW:
        problems.append(
            f"{in_window} customers bought in the latest {options.clv_horizon_days}-day CLV label "
            f"window; need at least {MIN_BUYERS_IN_WINDOW}"
        )
    if min(churned, stayed) < MIN_CHURN_CLASS:
        problems.append(
            f"churn labels at the latest cutoff: {churned} churned, {stayed} ordered; need at "
            f"least {MIN_CHURN_CLASS} of each"
        )
    if problems:
        raise NotEligible(
            "not enough data to train on: "
            + "; ".join(problems)
            + ". Load more history, pick a later --as-of or shorter horizons "
            "(docs/predictions.md, Eligibility)"
        )
    return {
        "customers": data.get("customers"),
        "events_by_type": data.get("events_by_type"),
        "first_event": data.get("min_occurred_at"),
        "last_event": data.get("max_occurred_at"),
        "as_of": options.as_of.isoformat(),
        "history_days": history_days,
        "customers_with_orders_at_latest_cutoff": buyers,
        "buyers_in_latest_clv_window": in_window,
        "churn_classes_at_latest_cutoff": {"churned": churned, "ordered": stayed},
        "minimums": {
            "history_days": needed_days,
            "customers_with_orders": MIN_CUSTOMERS_WITH_ORDERS,
            "buyers_in_window": MIN_BUYERS_IN_WINDOW,
            "churn_class": MIN_CHURN_CLASS,
        },
    }


def interval_coverage(
    clv: np.ndarray, actual: np.ndarray, intervals: dict[str, Any]
) -> dict[str, Any]:
    """Share of customers whose actual CLV lies in [p10, p90] (cents, as served), overall and by
    decile of predicted CLV (1 = highest)."""
    bounds = clv_interval(clv, intervals)
    if bounds is None or not len(clv):
        return {"coverage_80": None, "coverage_by_decile": []}
    low, _, high = bounds
    covered = (actual >= np.round(low, 2)) & (actual <= np.round(high, 2))
    order = np.argsort(-clv, kind="stable")
    return {
        "coverage_80": float(covered.mean()),
        "coverage_by_decile": [
            float(covered[part].mean()) for part in np.array_split(order, 10) if len(part)
        ],
    }


def _combine_served(directory: Path, manifest: Manifest, features: np.ndarray, say: Any) -> None:
    """The served graphs in one file for single predictions (issue 11), when it is exact.

    Built from the files that serve (after any challenger took over), and recorded only when it
    gives the same numbers as the four files on the holdout rows; else serving keeps the files.
    """
    paths = {
        target: directory / manifest.files[f"{target}_onnx"]
        for target in ("clv", "churn", "orders", "propensity")
    }
    try:
        combine(paths, directory / COMBINED_ONNX)
        worst = check_combined(paths, directory / COMBINED_ONNX, features)
    except Exception as exc:  # an optional speed-up: never fatal, said in the log
        worst, reason = math.inf, f"{type(exc).__name__}: {exc}"
    else:
        reason = f"max diff {worst:.1e}"
    if worst <= COMBINED_TOLERANCE:
        manifest.files["combined_onnx"] = COMBINED_ONNX
        manifest.parity.extra["combined"] = {"rows": float(len(features)), "max_abs_diff": worst}
    else:
        (directory / COMBINED_ONNX).unlink(missing_ok=True)
        say(f"combined ONNX graph not used ({reason}): the four files serve")
