"""The contents of one model version directory: ONNX export and parity gates, challengers,
the combined graph, in-time and out-of-time evaluation, interval coverage, the manifest,
the promotion decision and the report.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

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
    Manifest,
    write_manifest,
)
from app.features.definitions import FEATURE_NAMES
from app.features.repository import fingerprint
from app.scoring.predictor import Predictor, calibrate
from app.training import evaluate as evaluation
from app.training.dataset import Panel, feature_ranges
from app.training.export import check_combined, check_parity, check_parity_one, combine, to_onnx
from app.training.fit import importance, params
from app.training.intervals import holdout_coverage
from app.training.options import TrainingFailed, TrainOptions
from app.training.promotion import decide
from app.training.provenance import code_version, quantiles, reproduce_section
from app.training.refit import Fitted, PostProcessing
from app.training.reporting import write_training_report

#: The combined graph runs the very same nodes: it must agree to float32 rounding.
COMBINED_TOLERANCE = 1e-6


def _challengers(
    directory: Path,
    options: TrainOptions,
    fitted: dict[str, Fitted],
    post: PostProcessing,
    say: Any,
    non_buyers_share: float | None,
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
        non_buyers_share,
    )


def write_artifact(
    directory: Path,
    version: str,
    created: dt.datetime,
    options: TrainOptions,
    panel: Panel,
    cutoffs: dict[str, list[dt.datetime]],
    data: dict[str, Any],
    fitted: dict[str, Fitted],
    post: PostProcessing,
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
            "engine": (extra or {}).get("engine", {"name": "single", "workers": 1}),
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
        feature_ranges=feature_ranges(clv.split.train, churn.split.train),
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
    # A challenger's interval is shifted to the same expected share of non-buyers as XGBoost's.
    non_buyers = manifest.clv_intervals.get("non_buyers", {}).get("share")
    outcome = (
        _challengers(directory, options, fitted, post, say, non_buyers)
        if options.challengers
        else None
    )
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
        options.baseline_penalizer,
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
            holdout_coverage(fold_clv, holdout_clv.label, manifest.clv_intervals),
            coverage_80_in_time=holdout_coverage(
                predictor.predict(holdout_clv.features).clv,
                holdout_clv.label,
                manifest.clv_intervals,
            )["coverage_80"],
        )
    for name, why in in_time.failures.items():
        say(f"baseline {name} not evaluated: {why}")

    served_clv, served_churn = panel.served(options.as_of, predictor)
    manifest.clv_quantiles = quantiles(served_clv)
    manifest.churn_quantiles = quantiles(served_churn)
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
