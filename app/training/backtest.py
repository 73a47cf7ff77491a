"""`clv backtest`: rolling-origin, out-of-time backtests of the model against baselines.

At each origin o the model is trained by `clv train`'s own code on what was known at o (its
labels end at o), into a throwaway directory; every customer with an event by o is scored with
the served path (ONNX + manifest post-processing) and compared with what they did in (o, o + H].
The baselines are fitted at the same origin on the same customers: BG/NBD + Gamma-Gamma
(`lifetimes`; a failure is reported, never fatal), the spend-rate heuristic and a recency
heuristic. Customers are ordered by external id, so the numbers do not depend on load order.

This module runs the origins; the plan (options, origins, window check) is backtest_plan, the
metrics backtest_scores, the baselines backtest_baselines, the averages and verdict
backtest_verdict, the text and HTML output backtest_tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.artifacts import CHURN_ONNX, CLV_ONNX
from app.features.repository import FeatureMatrix, offline_matrix
from app.scoring.predictor import Predictor
from app.training.backtest_baselines import bg_nbd_baseline, recency_heuristic, spend_rate_heuristic
from app.training.backtest_plan import CHALLENGER_METHODS, METHODS, BacktestOptions, check_windows
from app.training.backtest_scores import MethodScores, method_metrics, prediction_metrics
from app.training.backtest_verdict import average, verdict
from app.training.options import TrainingFailed, TrainOptions, TrainResult
from app.training.repository import window_labels
from app.training.train import train

Trainer = Callable[[Engine, TrainOptions], TrainResult]
#: window length in days -> (net revenue floored at 0, order count) per customer of the matrix
Windows = dict[int, tuple[np.ndarray, np.ndarray]]
#: What an origin reads: every customer's features at the origin (external-id order) and the
#: labels of the windows that follow it. Single node: read_origin; on Dask:
#: app.distributed.backtest.origin_reader (the same statements, run per id range on the workers).
OriginReader = Callable[[Engine, dt.datetime, Sequence[int]], tuple[FeatureMatrix, Windows]]


def read_origin(
    engine: Engine, origin: dt.datetime, windows: Sequence[int]
) -> tuple[FeatureMatrix, Windows]:
    """`OriginReader` of one process: `offline_matrix` and `window_labels`."""
    matrix = offline_matrix(engine, origin)
    return matrix, {
        days: window_labels(engine, origin, days, matrix.customer_ids) for days in set(windows)
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_scores(
    engine: Engine,
    options: BacktestOptions,
    origin: dt.datetime,
    features: np.ndarray,
    trainer: Trainer,
) -> tuple[MethodScores, dict[str, Any]]:
    """Train at the origin into a temporary directory and score with the served path."""
    with tempfile.TemporaryDirectory(prefix="clv-backtest-") as tmp:
        train_options = TrainOptions(
            as_of=origin,
            model_dir=Path(tmp),
            clv_horizon_days=options.clv_horizon_days,
            churn_horizon_days=options.churn_horizon_days,
            seed=options.seed,
            threads=options.threads,
            currency=options.currency,
            baselines=False,
            progress=options.progress,
            challengers=options.challengers,
            propensity_days=options.propensity_days,
        )
        try:
            result = trainer(engine, train_options)
        except TrainingFailed as exc:
            return MethodScores(None, None, error=f"training failed: {exc}"), {}
        predicted = Predictor(result.directory).predict(features)
        challenger_scores = _challenger_scores(result.directory, result.manifest.training, features)
        info: dict[str, Any] = {
            "trees": {
                "clv": result.manifest.training.get("clv_trees"),
                "churn": result.manifest.training.get("churn_trees"),
            },
            "clv_onnx_sha256": _sha256(result.directory / CLV_ONNX),
            "churn_onnx_sha256": _sha256(result.directory / CHURN_ONNX),
            "code_version": result.manifest.code_version,
            "families": result.manifest.training.get(
                "families", {"clv": "xgboost", "churn": "xgboost"}
            ),
            "challenger_scores": challenger_scores,
            # Issue 11: how the served interval was calibrated (out of time, before the origin).
            "clv_interval": {
                key: result.manifest.clv_intervals.get(key)
                for key in (
                    "target_coverage",
                    "nominal_level",
                    "calibration_coverage",
                    "calibration_rows",
                    "gap_days",
                )
            },
        }
    return (
        MethodScores(
            clv=predicted.clv,
            churn_score=predicted.churn_probability,
            churn_probability=predicted.churn_probability,
            notes="trained at the origin by clv train's code, scored through ONNX",
            clv_p10=predicted.clv_p10,
            clv_p90=predicted.clv_p90,
            orders=predicted.expected_orders,
            propensity=predicted.order_probability,
        ),
        info,
    )


def _challenger_scores(
    directory: Path, training: dict[str, Any], features: np.ndarray
) -> dict[str, MethodScores]:
    """Every challenger of the artifact scored through its own ONNX graphs (as it would serve)."""
    from app.scoring.onnx import onnx_churn, onnx_clv, onnx_session

    out: dict[str, MethodScores] = {}
    for family, block in training.get("challengers", {}).items():
        files = block["files"]
        if not block["parity"]["passed"]:
            out[family] = MethodScores(None, None, error="ONNX parity failed at this origin")
            continue
        clv = np.maximum(onnx_clv(onnx_session(directory / files["clv"]), features), 0.0)
        churn = onnx_churn(onnx_session(directory / files["churn"]), features)
        models = block["models"]
        out[family] = MethodScores(
            clv=clv,
            churn_score=churn,
            churn_probability=churn,
            notes=f"{models['clv']} (CLV) + {models['churn']} (churn), trained at the origin "
            "by clv train --challengers, scored through ONNX",
        )
    return out


def run_origin(
    engine: Engine,
    options: BacktestOptions,
    origin: dt.datetime,
    trainer: Trainer = train,
    reader: OriginReader = read_origin,
) -> dict[str, Any]:
    """Train, score, label and evaluate every method at one origin."""
    matrix, labels = reader(
        engine,
        origin,
        (options.clv_horizon_days, options.churn_horizon_days, options.propensity_days),
    )
    entry: dict[str, Any] = {
        "origin": origin.isoformat(),
        "customers": len(matrix),
        "clv_window_end": (origin + dt.timedelta(days=options.clv_horizon_days)).isoformat(),
        "churn_window_end": (origin + dt.timedelta(days=options.churn_horizon_days)).isoformat(),
    }
    if not len(matrix):
        entry["methods"] = {m: {"status": "failed", "reason": "no customers"} for m in METHODS}
        return entry
    clv_actual, orders_actual = labels[options.clv_horizon_days]
    churned = (labels[options.churn_horizon_days][1] == 0).astype(np.float64)
    soon = labels[options.propensity_days][1]
    bought = (soon > 0).astype(np.float64)
    entry["propensity_window_end"] = (
        origin + dt.timedelta(days=options.propensity_days)
    ).isoformat()
    entry["actual_orders"] = int(orders_actual.sum())
    entry["propensity_rate"] = float(bought.mean())
    entry["actual_total"] = float(clv_actual.sum())
    entry["churn_rate"] = float(churned.mean())

    features = matrix.values
    model, entry["model"] = _model_scores(engine, options, origin, features, trainer)
    challenger_scores = entry["model"].pop("challenger_scores", {})
    all_scores = {
        "model": model,
        "bg_nbd_gamma_gamma": (
            bg_nbd_baseline(features, options)
            if options.bg_nbd
            else MethodScores(None, None, error="skipped (--no-bg-nbd)")
        ),
        "spend_rate": spend_rate_heuristic(features, options.clv_horizon_days),
        "recency": recency_heuristic(features, options.clv_horizon_days),
        **{
            name: challenger_scores.get(
                name,
                MethodScores(
                    None,
                    None,
                    error="not trained (clv backtest --challengers)"
                    if not options.challengers
                    else "no challenger in the artifact",
                ),
            )
            for name in CHALLENGER_METHODS
        },
    }
    methods: dict[str, Any] = {}
    for name, scores in all_scores.items():
        if scores.error is not None or scores.clv is None:
            methods[name] = {"status": "failed", "reason": scores.error or "no scores"}
            continue
        methods[name] = {
            "status": "ok",
            "notes": scores.notes,
            **scores.extra,
            **method_metrics(clv_actual, churned, scores),
            **prediction_metrics(clv_actual, orders_actual.astype(np.float64), bought, scores),
        }
    entry["methods"] = methods
    return entry


def run_backtest(
    engine: Engine,
    options: BacktestOptions,
    trainer: Trainer = train,
    on_origin: Callable[[dict[str, Any]], None] | None = None,
    reader: OriginReader = read_origin,
) -> dict[str, Any]:
    """All origins, their averages and the verdict, as a JSON-able dict (`run` holds timings).

    `trainer` trains the model at an origin and `reader` reads the origin's features and labels:
    `clv backtest --dask` passes the Dask ones (app.distributed.commands.backtest_parts).
    """
    check_windows(engine, options)
    started = time.perf_counter()
    entries = []
    for origin in options.origin_list():
        entry = run_origin(engine, options, origin, trainer, reader)
        entries.append(entry)
        if on_origin is not None:
            on_origin(entry)
    return {
        "options": {
            "last_origin": options.last_origin.isoformat(),
            "origins": options.origins,
            "step_days": options.step_days,
            "clv_horizon_days": options.clv_horizon_days,
            "churn_horizon_days": options.churn_horizon_days,
            "seed": options.seed,
            "threads": options.threads,
            "currency": options.currency,
            "propensity_days": options.propensity_days,
        },
        "origins": entries,
        "average": average(entries),
        "verdict": verdict(entries),
        # Not part of the result proper: differs run to run.
        "run": {"seconds": round(time.perf_counter() - started, 2)},
    }
