"""`clv train`: point-in-time training rows, XGBoost CLV + churn, ONNX export, evaluation, promotion.

Rows: for each cutoff c (the latest is as_of - horizon, earlier ones step back `stack_step_days`),
the features of every customer known by c (offline features, the same definitions the API
serves) and labels from (c, c + horizon]. Holdout customers (a deterministic hash) never train;
they are evaluated at the latest cutoff, beside the baselines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xgboost as xgb
from sqlalchemy import Engine
from tqdm import tqdm

from app import __version__
from app.artifacts import (
    CHURN_NATIVE,
    CHURN_ONNX,
    CLV_NATIVE,
    CLV_ONNX,
    REPORT,
    Calibration,
    Manifest,
    current_directory,
    promote,
    quantile_levels,
    read_manifest,
    write_manifest,
)
from app.features.definitions import FEATURE_NAMES, fingerprint
from app.features.repository import FeatureMatrix, offline_features
from app.scoring.predictor import ArtifactMismatch, Predictor, calibrate
from app.training import baselines, metrics
from app.training.export import check_parity, native_predict, to_onnx
from app.training.repository import window_labels

logger = logging.getLogger(__name__)

Split = Literal["hash", "protocol-a"]

CLV_PARAMS: dict[str, Any] = {
    "objective": "reg:tweedie",
    "tweedie_variance_power": 1.3,
    "eval_metric": "tweedie-nloglik@1.3",
}
CHURN_PARAMS: dict[str, Any] = {"objective": "binary:logistic", "eval_metric": "logloss"}
TREE_PARAMS: dict[str, Any] = {
    "eta": 0.03,
    "max_depth": 3,
    "min_child_weight": 20.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "tree_method": "hist",
    "max_bin": 256,
}
MAX_ROUNDS = 3000
EARLY_STOPPING_ROUNDS = 200
#: "Not worse" for promotion: rank metrics may drop by at most this much (holdout noise).
PROMOTION_SLACK = 0.002
#: BG/NBD is fitted on at most this many customers (lifetimes is slow on millions).
BGNBD_FIT_SAMPLE = 100_000


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
    stack: int = 7
    stack_step_days: int = 30
    validation_fraction: float = 0.15
    seed: int = 0
    force: bool = False
    baselines: bool = True
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    currency: str = "USD"
    progress: bool = True


@dataclass
class TrainResult:
    """The artifact written and whether it now serves."""

    directory: Path
    manifest: Manifest
    promoted: bool
    reason: str


def _hash_share(customer_id: str, salt: str) -> int:
    return int(hashlib.sha256(f"{salt}:{customer_id}".encode()).hexdigest()[:12], 16) % 10_000


def holdout_mask(customer_ids: list[str], fraction: float, split: Split) -> np.ndarray:
    """True for holdout customers: a stable hash, or PROTOCOL.md's exact test half."""
    if split == "protocol-a":
        return np.array(
            [int(hashlib.sha256(c.encode()).hexdigest(), 16) % 2 == 1 for c in customer_ids]
        )
    return np.array([_hash_share(c, "holdout") < fraction * 10_000 for c in customer_ids])


def validation_mask(customer_ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """True for the (non-holdout) customers whose rows drive early stopping."""
    return np.array([_hash_share(c, f"validation{seed}") < fraction * 10_000 for c in customer_ids])


@dataclass
class Rows:
    """Stacked training rows of one target (all cutoffs), with their customers and cutoff index."""

    customer_ids: list[str]
    cutoff: np.ndarray  # index into the cutoff list, 0 = latest
    features: np.ndarray
    label: np.ndarray

    def take(self, mask: np.ndarray) -> Rows:
        ids = [c for c, keep in zip(self.customer_ids, mask, strict=True) if keep]
        return Rows(ids, self.cutoff[mask], self.features[mask], self.label[mask])


class _Panel:
    """Feature matrices and labels per cutoff, computed once and shared by both targets."""

    def __init__(self, engine: Engine, progress: bool) -> None:
        self.engine = engine
        self.progress = progress
        self.features: dict[dt.datetime, FeatureMatrix] = {}
        self.labels: dict[tuple[dt.datetime, int], tuple[np.ndarray, np.ndarray]] = {}

    def at(self, cutoff: dt.datetime) -> FeatureMatrix:
        if cutoff not in self.features:
            parts = list(offline_features(self.engine, cutoff))
            if not parts:
                self.features[cutoff] = FeatureMatrix(
                    cutoff, [], np.empty((0, len(FEATURE_NAMES))), np.empty(0)
                )
            else:
                self.features[cutoff] = FeatureMatrix(
                    cutoff,
                    [c for p in parts for c in p.customer_ids],
                    np.vstack([p.values for p in parts]),
                    np.concatenate([p.n_events for p in parts]),
                    np.concatenate([p.customer_pks for p in parts]),
                )
        return self.features[cutoff]

    def window(self, cutoff: dt.datetime, days: int) -> tuple[np.ndarray, np.ndarray]:
        key = (cutoff, days)
        if key not in self.labels:
            self.labels[key] = window_labels(
                self.engine, cutoff, days, self.at(cutoff).customer_ids
            )
        return self.labels[key]

    def rows(
        self,
        cutoffs: list[dt.datetime],
        days: int,
        label: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> Rows:
        ids: list[str] = []
        index, blocks, labels = [], [], []
        for i, cutoff in enumerate(
            tqdm(
                cutoffs,
                desc=f"rows ({days}-day labels)",
                disable=None if self.progress else True,
                file=sys.stderr,
            )
        ):
            matrix = self.at(cutoff)
            net, orders = self.window(cutoff, days)
            ids += matrix.customer_ids
            index.append(np.full(len(matrix), i))
            blocks.append(matrix.values)
            labels.append(label(net, orders))
        return Rows(
            ids, np.concatenate(index), np.vstack(blocks), np.concatenate(labels).astype(np.float64)
        )


class _Rounds(xgb.callback.TrainingCallback):
    """A progress bar over boosting rounds."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.bar = tqdm(
            total=MAX_ROUNDS,
            desc=f"boosting {name}",
            disable=None if enabled else True,
            file=sys.stderr,
        )

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:  # noqa: ARG002
        self.bar.update(1)
        return False

    def after_training(self, model: Any) -> Any:
        self.bar.close()
        return model


def _fit(
    params: dict[str, Any], train: Rows, validation: Rows, options: TrainOptions, name: str
) -> xgb.Booster:
    full = {**TREE_PARAMS, **params, "seed": options.seed, "nthread": options.threads}
    dtrain = xgb.DMatrix(train.features.astype(np.float32), label=train.label)
    dvalid = xgb.DMatrix(validation.features.astype(np.float32), label=validation.label)
    booster = xgb.train(
        full,
        dtrain,
        num_boost_round=MAX_ROUNDS,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
        callbacks=[_Rounds(name, options.progress)],
    )
    best = booster.best_iteration
    # Keep only the trees up to the best round, so ONNX and native agree without iteration_range.
    trimmed = booster[: best + 1]
    trimmed.set_param({"nthread": 1})
    return trimmed


def _platt(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Logistic regression of the label on logit(p) (Newton's method)."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    z = np.log(p / (1 - p))
    a, b = 1.0, 0.0
    for _ in range(50):
        q = 1 / (1 + np.exp(-(a * z + b)))
        gradient = np.array([np.sum((q - labels) * z), np.sum(q - labels)])
        w = q * (1 - q)
        hessian = np.array(
            [[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]
        ) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def choose_calibration(
    probabilities: np.ndarray, labels: np.ndarray, customer_ids: list[str]
) -> tuple[Calibration, dict[str, float]]:
    """Platt-scale only if it lowers the Brier score on data it was not fitted on (2-fold check)."""
    fold = np.array([_hash_share(c, "calibration") % 2 == 0 for c in customer_ids])
    raw, scaled = [], []
    for fit_mask in (fold, ~fold):
        if fit_mask.sum() < 50 or (~fit_mask).sum() < 50:
            return Calibration(method="none"), {}
        a, b = _platt(probabilities[fit_mask], labels[fit_mask])
        held = ~fit_mask
        raw.append(np.mean((probabilities[held] - labels[held]) ** 2))
        scaled.append(np.mean((calibrate(probabilities[held], a, b) - labels[held]) ** 2))
    brier_raw, brier_platt = float(np.mean(raw)), float(np.mean(scaled))
    check = {"validation_brier_raw": brier_raw, "validation_brier_platt": brier_platt}
    if brier_platt < brier_raw * 0.99:  # a real improvement, not noise
        a, b = _platt(probabilities, labels)
        return Calibration(method="platt", a=a, b=b), check
    return Calibration(method="none"), check


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.CalledProcessError):
        return __version__


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {f"p{q}": 0.0 for q in quantile_levels()}
    return {f"p{q}": float(np.percentile(values, q)) for q in quantile_levels()}


def _importance(booster: xgb.Booster) -> list[tuple[str, float]]:
    gains = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}  # type: ignore[arg-type]
    total = sum(gains.values()) or 1.0
    named = [(FEATURE_NAMES[int(k[1:])], v / total) for k, v in gains.items()]
    return sorted(named, key=lambda kv: kv[1], reverse=True)


def train(engine: Engine, options: TrainOptions) -> TrainResult:
    """Build rows, fit, export, check parity, evaluate, write the artifact, maybe promote it."""
    started = time.perf_counter()
    say = (lambda m: sys.stderr.write(m + "\n")) if options.progress else logger.info
    clv_cutoffs = [
        options.as_of - dt.timedelta(days=options.clv_horizon_days + k * options.stack_step_days)
        for k in range(options.stack)
    ]
    churn_cutoffs = [
        options.as_of - dt.timedelta(days=options.churn_horizon_days + k * options.stack_step_days)
        for k in range(options.stack)
    ]
    panel = _Panel(engine, options.progress)

    clv_rows = panel.rows(clv_cutoffs, options.clv_horizon_days, lambda net, _orders: net)
    churn_rows = panel.rows(
        churn_cutoffs,
        options.churn_horizon_days,
        lambda _net, orders: (orders == 0).astype(np.float64),
    )
    if not len(clv_rows.customer_ids) or not len(churn_rows.customer_ids):
        raise TrainingFailed(
            f"no customers with events before the cutoffs {clv_cutoffs[0]:%Y-%m-%d} / {churn_cutoffs[0]:%Y-%m-%d}: "
            "load data first or pick a later --as-of"
        )
    say(
        f"rows: CLV {len(clv_rows.customer_ids):,} over {len(clv_cutoffs)} cutoffs, churn {len(churn_rows.customer_ids):,}"
    )

    splits: dict[str, dict[str, Rows]] = {}
    for name, rows in (("clv", clv_rows), ("churn", churn_rows)):
        holdout = holdout_mask(rows.customer_ids, options.holdout_fraction, options.split)
        validation = (
            validation_mask(rows.customer_ids, options.validation_fraction, options.seed) & ~holdout
        )
        splits[name] = {
            "train": rows.take(~holdout & ~validation),
            # Early stopping judges the latest cutoff only: that is the situation the model serves.
            "validation": rows.take(validation & (rows.cutoff == 0)),
            "holdout": rows.take(holdout & (rows.cutoff == 0)),
        }
        if min(len(part.customer_ids) for part in splits[name].values()) == 0:
            raise TrainingFailed(
                f"too few customers to split for {name}: need train, validation and holdout rows"
            )

    clv_booster = _fit(
        CLV_PARAMS, splits["clv"]["train"], splits["clv"]["validation"], options, "CLV"
    )
    churn_booster = _fit(
        CHURN_PARAMS, splits["churn"]["train"], splits["churn"]["validation"], options, "churn"
    )

    # Aggregate calibration of CLV: the mean prediction matches the mean label on the latest
    # training cutoff (stacked older cutoffs pull the level towards older customers).
    latest = splits["clv"]["train"].take(splits["clv"]["train"].cutoff == 0)
    predicted_latest = native_predict(clv_booster, latest.features)
    clv_scale = (
        float(latest.label.sum() / predicted_latest.sum()) if predicted_latest.sum() > 0 else 1.0
    )

    churn_validation = splits["churn"]["validation"].take(splits["churn"]["validation"].cutoff == 0)
    calibration, calibration_check = choose_calibration(
        native_predict(churn_booster, churn_validation.features),
        churn_validation.label,
        churn_validation.customer_ids,
    )

    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    version = f"{created:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    directory = options.model_dir / version
    directory.mkdir(parents=True, exist_ok=False)
    to_onnx(clv_booster, len(FEATURE_NAMES), directory / CLV_ONNX)
    to_onnx(churn_booster, len(FEATURE_NAMES), directory / CHURN_ONNX)
    clv_booster.save_model(directory / CLV_NATIVE)
    churn_booster.save_model(directory / CHURN_NATIVE)

    holdout_clv, holdout_churn = splits["clv"]["holdout"], splits["churn"]["holdout"]
    parity = check_parity(
        clv_booster,
        churn_booster,
        directory / CLV_ONNX,
        directory / CHURN_ONNX,
        np.vstack([holdout_clv.features, holdout_churn.features]),
    )
    say(
        f"ONNX parity on {parity.rows:,} holdout rows: CLV max rel diff {parity.clv_max_rel_diff:.2e}, "
        f"churn max abs diff {parity.churn_max_abs_diff:.2e} -> {'ok' if parity.passed else 'FAILED'}"
    )

    rows_count = {
        f"{target}_{part}": len(splits[target][part].customer_ids)
        for target in ("clv", "churn")
        for part in ("train", "validation", "holdout")
    }
    manifest = Manifest(
        version=version,
        created_at=created,
        code_version=_code_version(),
        as_of=options.as_of,
        clv_horizon_days=options.clv_horizon_days,
        churn_horizon_days=options.churn_horizon_days,
        currency=options.currency,
        feature_names=list(FEATURE_NAMES),
        feature_fingerprint=fingerprint(),
        cutoffs={"clv": clv_cutoffs, "churn": churn_cutoffs},
        split={
            "method": options.split,
            "holdout_fraction": 0.5 if options.split == "protocol-a" else options.holdout_fraction,
            "validation_fraction": options.validation_fraction,
            "seed": options.seed,
        },
        rows=rows_count,
        training={
            "clv_params": {**TREE_PARAMS, **CLV_PARAMS},
            "churn_params": {**TREE_PARAMS, **CHURN_PARAMS},
            "clv_trees": clv_booster.num_boosted_rounds(),
            "churn_trees": churn_booster.num_boosted_rounds(),
            "clv_scale": clv_scale,
            "calibration_check": calibration_check,
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
    )
    write_manifest(directory, manifest)
    if not parity.passed:
        raise TrainingFailed(
            f"ONNX and XGBoost disagree beyond {parity.tolerance}: {parity}; artifact left in {directory}"
        )

    # Everything below is measured with the served path (ONNX + manifest post-processing).
    predictor = Predictor(directory)
    model_clv = predictor.predict(holdout_clv.features).clv
    model_churn = predictor.predict(holdout_churn.features).churn_probability
    evaluated = _evaluate(
        options,
        panel,
        clv_cutoffs[0],
        churn_cutoffs[0],
        holdout_clv,
        holdout_churn,
        model_clv,
        model_churn,
        clv_booster,
        churn_booster,
    )
    manifest.metrics = {name: values for name, values, _ in evaluated}

    now = panel.at(options.as_of)
    served = predictor.predict(now.values) if len(now) else None
    manifest.clv_quantiles = _quantiles(served.clv if served else np.empty(0))
    manifest.churn_quantiles = _quantiles(served.churn_probability if served else np.empty(0))
    manifest.training["seconds"] = round(time.perf_counter() - started, 2)

    promoted, reason = _promotion(options, holdout_clv, holdout_churn, model_clv, model_churn)
    manifest.promotion = {"promoted": promoted, "reason": reason}
    write_manifest(directory, manifest)
    _write_report(directory / REPORT, manifest, holdout_clv, holdout_churn, evaluated)
    if promoted:
        promote(options.model_dir, version)
    say(f"model {version}: {reason}")
    return TrainResult(
        directory=directory, manifest=read_manifest(directory), promoted=promoted, reason=reason
    )


def _evaluate(
    options: TrainOptions,
    panel: _Panel,
    clv_cutoff: dt.datetime,
    churn_cutoff: dt.datetime,
    holdout_clv: Rows,
    holdout_churn: Rows,
    model_clv: np.ndarray,
    model_churn: np.ndarray,
    clv_booster: xgb.Booster,
    churn_booster: xgb.Booster,
) -> list[tuple[str, dict[str, float], Any]]:
    """(name, metrics, report entry) for the model and each baseline, on the same holdout."""
    from app.training.report import EvaluatedModel

    clv_actual, churned = holdout_clv.label, holdout_churn.label
    same_rows = holdout_clv.customer_ids == holdout_churn.customer_ids
    # Churn arrays align with the churn holdout (its own cutoff when the horizons differ).

    def entry(
        name: str,
        clv: np.ndarray,
        churn_score: np.ndarray,
        churn_probability: np.ndarray | None,
        **extra: Any,
    ) -> tuple[str, dict[str, float], Any]:
        values = {
            **metrics.clv_metrics(clv_actual, clv),
            **metrics.churn_metrics(churned, churn_score, churn_probability),
        }
        report_entry = EvaluatedModel(
            name=name,
            clv_predicted=clv,
            churn_score=churn_score,
            churn_probability=churn_probability,
            **extra,
        )
        return name, values, report_entry

    out = [
        entry(
            "model",
            model_clv,
            model_churn,
            model_churn,
            feature_importance={
                "CLV": _importance(clv_booster)[:15],
                "Churn": _importance(churn_booster)[:15],
            },
        )
    ]
    rate_clv, _ = baselines.spend_rate(holdout_clv.features, options.clv_horizon_days)
    _, rate_churn = baselines.spend_rate(holdout_churn.features, options.clv_horizon_days)
    out.append(
        entry(
            "spend_rate",
            rate_clv,
            rate_churn,
            None,
            notes="net revenue per day since first order x horizon; churn score = recency",
        )
    )
    if options.baselines:
        fit_clv = panel.at(clv_cutoff).values
        if len(fit_clv) > BGNBD_FIT_SAMPLE:
            pick = np.random.default_rng(options.seed).choice(
                len(fit_clv), BGNBD_FIT_SAMPLE, replace=False
            )
            fit_clv = fit_clv[pick]
        bg = baselines.bg_nbd_gamma_gamma(
            fit_clv, holdout_clv.features, options.clv_horizon_days, options.churn_horizon_days
        )
        if bg is not None:
            churn_score = bg.churn_score
            if churn_cutoff != clv_cutoff or not same_rows:
                fit_churn = panel.at(churn_cutoff).values[:BGNBD_FIT_SAMPLE]
                bg_churn = baselines.bg_nbd_gamma_gamma(
                    fit_churn,
                    holdout_churn.features,
                    options.clv_horizon_days,
                    options.churn_horizon_days,
                )
                churn_score = bg_churn.churn_score if bg_churn is not None else churn_score
            params = ", ".join(f"{k}={v:.3g}" for k, v in bg.parameters.items())
            out.append(
                entry(
                    "bg_nbd_gamma_gamma",
                    bg.clv,
                    churn_score,
                    None,
                    notes=f"lifetimes BG/NBD + Gamma-Gamma: {params}",
                )
            )
    return out


def _promotion(
    options: TrainOptions,
    holdout_clv: Rows,
    holdout_churn: Rows,
    model_clv: np.ndarray,
    model_churn: np.ndarray,
) -> tuple[bool, str]:
    """Promote unless the current model, scored on this very holdout, is better."""
    gini = metrics.normalized_gini(holdout_clv.label, model_clv)
    auc = metrics.roc_auc(holdout_churn.label, model_churn)
    current = current_directory(options.model_dir)
    if current is None:
        return True, f"promoted: no current model (holdout Gini {gini:.4f}, churn AUC {auc:.4f})"
    try:
        incumbent = Predictor(current)
    except (ArtifactMismatch, ValueError) as exc:
        return True, f"promoted: the current model cannot serve this code ({exc})"
    old_gini = metrics.normalized_gini(
        holdout_clv.label, incumbent.predict(holdout_clv.features).clv
    )
    old_auc = metrics.roc_auc(
        holdout_churn.label, incumbent.predict(holdout_churn.features).churn_probability
    )
    comparison = (
        f"holdout Gini {gini:.4f} vs current {old_gini:.4f}, churn AUC {auc:.4f} vs {old_auc:.4f}"
    )
    if gini >= old_gini - PROMOTION_SLACK and auc >= old_auc - PROMOTION_SLACK:
        return True, f"promoted: not worse than {incumbent.manifest.version} ({comparison})"
    if options.force:
        return (
            True,
            f"promoted with --force although worse than {incumbent.manifest.version} ({comparison})",
        )
    return (
        False,
        f"NOT promoted: worse than {incumbent.manifest.version} ({comparison}); --force overrides",
    )


def _write_report(
    path: Path,
    manifest: Manifest,
    holdout_clv: Rows,
    holdout_churn: Rows,
    evaluated: list[tuple[str, dict[str, float], Any]],
) -> None:
    from app.training.report import write_report

    names = {
        "model": "XGBoost (this model)",
        "spend_rate": "Spend-rate heuristic",
        "bg_nbd_gamma_gamma": "BG/NBD + Gamma-Gamma",
    }
    models = []
    for name, _values, report_entry in evaluated:
        models.append(
            type(report_entry)(**{**report_entry.__dict__, "name": names.get(name, name)})
        )
    summary = {
        "Version": manifest.version,
        "as_of": manifest.as_of.isoformat(),
        "Horizons": f"CLV {manifest.clv_horizon_days} days, churn {manifest.churn_horizon_days} days",
        "Rows": ", ".join(f"{k} {v:,}" for k, v in manifest.rows.items()),
        "Cutoffs": f"{len(manifest.cutoffs['clv'])} stacked, latest {manifest.cutoffs['clv'][0]:%Y-%m-%d} (CLV) / {manifest.cutoffs['churn'][0]:%Y-%m-%d} (churn)",
        "Split": f"{manifest.split['method']} holdout {manifest.split['holdout_fraction']:.0%}",
        "ONNX parity": f"{'passed' if manifest.parity.passed else 'FAILED'} (CLV rel {manifest.parity.clv_max_rel_diff:.1e}, churn abs {manifest.parity.churn_max_abs_diff:.1e})",
        "Churn calibration": manifest.churn_calibration.method,
        "Promotion": str(manifest.promotion.get("reason", "")),
    }
    write_report(
        path,
        title=f"clv-service model {manifest.version}",
        summary=summary,
        clv_actual=holdout_clv.label,
        churn_actual=holdout_churn.label,
        models=models,
        clv_horizon_days=manifest.clv_horizon_days,
        churn_horizon_days=manifest.churn_horizon_days,
        currency=manifest.currency,
    )
