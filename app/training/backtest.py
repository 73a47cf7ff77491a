"""`clv backtest`: rolling-origin, out-of-time backtests of the model against baselines.

At each origin o the model is trained by `clv train`'s own code on what was known at o (its
labels end at o), into a throwaway directory; every customer with an event by o is scored with
the served path (ONNX + manifest post-processing) and compared with what they did in (o, o + H].
The baselines are fitted at the same origin on the same customers: BG/NBD + Gamma-Gamma
(`lifetimes`; a failure is reported, never fatal), the spend-rate heuristic and a recency
heuristic. Customers are ordered by external id, so the numbers do not depend on load order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import html
import inspect
import io
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import brier_score_loss, roc_auc_score
from sqlalchemy import Engine

from app.artifacts import CHURN_ONNX, CLV_ONNX
from app.features.definitions import FEATURE_INDEX
from app.features.repository import offline_matrix
from app.scoring.predictor import Predictor
from app.training import baselines, metrics
from app.training.backtest_repository import order_log_extent
from app.training.repository import window_labels
from app.training.train import TrainingFailed, TrainOptions, TrainResult, train

#: The methods in the order tables show them; the model is compared with each of the others.
METHODS = ("model", "bg_nbd_gamma_gamma", "spend_rate", "recency", "linear", "mlp")
#: Challengers (app.training.challengers), trained inside `clv train --challengers` at the origin.
CHALLENGER_METHODS = ("linear", "mlp")
TITLES = {
    "model": "XGBoost (clv train)",
    "linear": "Ridge + logistic",
    "mlp": "MLP (scikit-learn)",
    "bg_nbd_gamma_gamma": "BG/NBD + Gamma-Gamma",
    "spend_rate": "Spend-rate heuristic",
    "recency": "Recency heuristic",
}
#: Metrics where higher is better, compared model vs baseline for the verdict.
RANK_METRICS = ("gini", "spearman", "auc")
BIAS_TOLERANCE = 0.10


class BacktestError(ValueError):
    """The backtest cannot run as asked (no data, windows past the end of the log...)."""


@dataclass(frozen=True)
class BacktestOptions:
    """What `clv backtest` was asked to do."""

    last_origin: dt.datetime
    origins: int = 4
    step_days: int = 30
    clv_horizon_days: int = 365
    churn_horizon_days: int = 90
    seed: int = 0
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    currency: str = "USD"
    bg_nbd: bool = True
    propensity_days: int = 30  # issue 11: window of the order-probability metric
    challengers: bool = False
    allow_partial_window: bool = False
    progress: bool = False

    def origin_list(self) -> list[dt.datetime]:
        """The origins, oldest first, `step_days` apart, ending at `last_origin`."""
        return [
            self.last_origin - dt.timedelta(days=k * self.step_days)
            for k in reversed(range(self.origins))
        ]


@dataclass(frozen=True)
class MethodScores:
    """One method's scores for every customer at an origin, or why it has none."""

    clv: np.ndarray | None
    churn_score: np.ndarray | None
    churn_probability: np.ndarray | None = None
    error: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Issue 11: CLV interval, expected orders over the CLV horizon, P(order in propensity_days).
    clv_p10: np.ndarray | None = None
    clv_p90: np.ndarray | None = None
    orders: np.ndarray | None = None
    propensity: np.ndarray | None = None


Trainer = Callable[[Engine, TrainOptions], TrainResult]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def method_metrics(
    clv_actual: np.ndarray, churned: np.ndarray, scores: MethodScores
) -> dict[str, Any]:
    """Gini, Spearman, AUC, Brier, aggregate bias, top-10 % capture and deciles of one method."""
    if scores.clv is None or scores.churn_score is None:
        raise ValueError("no scores to evaluate")
    clv = scores.clv
    total = float(clv_actual.sum())
    both_classes = 0 < churned.sum() < len(churned)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: spearmanr warns and returns nan
        rho = float(spearmanr(clv_actual, clv).statistic) if len(clv) > 1 else math.nan
    top = max(1, math.ceil(len(clv) / 10))
    order = np.argsort(-clv, kind="stable")  # ties: external-id order (rows are sorted by id)
    ideal = np.sort(clv_actual)[::-1]
    return {
        "gini": _finite(metrics.normalized_gini(clv_actual, clv)) if total > 0 else None,
        "spearman": _finite(rho),
        "auc": float(roc_auc_score(churned, scores.churn_score)) if both_classes else None,
        "brier": (
            float(brier_score_loss(churned, np.clip(scores.churn_probability, 0.0, 1.0)))
            if scores.churn_probability is not None
            else None
        ),
        "bias": float(clv.sum() / total) if total > 0 else None,
        "top10_share": float(clv_actual[order[:top]].sum() / total) if total > 0 else None,
        "top10_share_ideal": float(ideal[:top].sum() / total) if total > 0 else None,
        "predicted_total": float(clv.sum()),
        "deciles": [asdict(d) for d in metrics.deciles(clv_actual, clv)],
    }


def _column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FEATURE_INDEX[name]]


#: Issue 11's bar: the 80 % CLV interval covers 80 % ± 5 points of customers at every origin.
COVERAGE_TARGET, COVERAGE_TOLERANCE = 0.80, 0.05


def prediction_metrics(
    clv_actual: np.ndarray, orders_actual: np.ndarray, bought: np.ndarray, scores: MethodScores
) -> dict[str, Any]:
    """Issue 11: interval coverage (overall, by decile of predicted CLV), orders MAE and bias,
    propensity AUC and Brier; None for what a method does not predict."""
    out: dict[str, Any] = {
        "coverage_80": None,
        "below_p10": None,
        "above_p90": None,
        "coverage_by_decile": None,
        "orders_mae": None,
        "orders_bias": None,
        "propensity_auc": None,
        "propensity_brier": None,
    }
    if scores.clv_p10 is not None and scores.clv_p90 is not None and scores.clv is not None:
        # Rounded like the API (cents): an actual of 0 against a p10 of 1e-9 is covered.
        low, high = np.round(scores.clv_p10, 2), np.round(scores.clv_p90, 2)
        covered = (clv_actual >= low) & (clv_actual <= high)
        out["coverage_80"] = float(covered.mean())
        out["below_p10"] = float((clv_actual < low).mean())
        out["above_p90"] = float((clv_actual > high).mean())
        order = np.argsort(-scores.clv, kind="stable")
        out["coverage_by_decile"] = [
            {
                "decile": k + 1,
                "customers": len(part),
                "coverage": float(covered[part].mean()),
                "zero_actual_share": float((clv_actual[part] == 0).mean()),
            }
            for k, part in enumerate(np.array_split(order, 10))
            if len(part)
        ]
    if scores.orders is not None:
        total = float(orders_actual.sum())
        out["orders_mae"] = float(np.mean(np.abs(scores.orders - orders_actual)))
        out["orders_bias"] = float(scores.orders.sum() / total) if total > 0 else None
    if scores.propensity is not None:
        if 0 < bought.sum() < len(bought):
            out["propensity_auc"] = float(roc_auc_score(bought, scores.propensity))
        out["propensity_brier"] = float(
            brier_score_loss(bought, np.clip(scores.propensity, 0.0, 1.0))
        )
    return out


def _bg_nbd_purchases(parameters: dict[str, float], features: np.ndarray, days: int) -> np.ndarray:
    """BG/NBD's expected transactions (repeat order days) over the next `days`; 0 without orders."""
    import pandas as pd
    from lifetimes import BetaGeoFitter

    frequency, recency, age, _ = baselines.rfm(features)
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series({k: parameters[k] for k in ("r", "alpha", "a", "b")})
    expected = np.asarray(
        fitter.conditional_expected_number_of_purchases_up_to_time(days, frequency, recency, age),
        dtype=float,
    )
    has_orders = _column(features, "orders") > 0
    return np.where(has_orders, np.nan_to_num(expected), 0.0)


def recency_heuristic(features: np.ndarray, horizon_days: int) -> MethodScores:
    """Spend rate for customers seen within one horizon, 0 for the others; churn = overdueness.

    Churn score = days since the last order / the customer's usual days between orders (a
    single-order customer's "usual gap" is their order age), so a weekly buyer silent for a
    month ranks above a yearly buyer silent for a month.
    """
    recency = _column(features, "recency_days")
    has_orders = _column(features, "orders") > 0
    per_day = np.maximum(_column(features, "net_revenue"), 0.0) / np.maximum(
        _column(features, "order_age_days"), 1.0
    )
    recent = has_orders & (recency <= horizon_days)
    usual_gap = np.nan_to_num(_column(features, "mean_days_between_orders"), nan=0.0)
    usual_gap = np.where(usual_gap > 0, usual_gap, _column(features, "order_age_days"))
    overdue = np.where(has_orders, recency / np.maximum(usual_gap, 1.0), np.inf)
    return MethodScores(
        clv=np.where(recent, per_day * horizon_days, 0.0),
        churn_score=np.nan_to_num(overdue, posinf=1e9),
        notes="CLV: spend rate if the last order is within one horizon, else 0; "
        "churn score: days since last order / usual days between orders",
    )


def spend_rate_heuristic(features: np.ndarray, horizon_days: int) -> MethodScores:
    """app.training.baselines.spend_rate: net revenue per day since the first order x horizon."""
    clv, churn = baselines.spend_rate(features, horizon_days)
    return MethodScores(
        clv=clv,
        churn_score=np.nan_to_num(churn, nan=1e9),
        notes="CLV: net revenue per day since the first order x horizon; churn score: recency",
    )


def _no_purchase_probability(
    parameters: dict[str, float], features: np.ndarray, days: int
) -> np.ndarray:
    """BG/NBD P(no order in the next `days`): (1 - P(alive)) + P(alive) ((α+T)/(α+T+t))^(r+x).

    Exact under BG/NBD: a customer can only drop out right after a purchase, so without a
    purchase the alive/dead question is the only one left besides the Poisson wait.
    """
    import pandas as pd
    from lifetimes import BetaGeoFitter

    frequency, recency, age, _ = baselines.rfm(features)
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series({k: parameters[k] for k in ("r", "alpha", "a", "b")})
    alive = np.asarray(fitter.conditional_probability_alive(frequency, recency, age), dtype=float)
    r, alpha = parameters["r"], parameters["alpha"]
    wait = ((alpha + age) / (alpha + age + days)) ** (r + frequency)
    probability = (1.0 - alive) + alive * wait
    has_orders = _column(features, "orders") > 0
    return np.where(has_orders, np.clip(np.nan_to_num(probability, nan=1.0), 0.0, 1.0), 1.0)


#: BG/NBD + GG is fitted without a penalizer (PROTOCOL.md); only when that does not converge are
#: these tried, in order, and the one that fitted is reported beside the figures.
FALLBACK_PENALIZERS = (0.001, 0.01, 0.1)


def bg_nbd_baseline(features: np.ndarray, options: BacktestOptions) -> MethodScores:
    """BG/NBD + Gamma-Gamma fitted at the origin on the same customers; failures are reported.

    Without a penalizer first; if that fails and `baselines.bg_nbd_gamma_gamma` takes a
    `penalizer_coef`, with the fallback penalizers. Every failed attempt is named in the result.
    """
    takes_penalizer = "penalizer_coef" in inspect.signature(baselines.bg_nbd_gamma_gamma).parameters
    failures: list[str] = []
    for penalizer in (0.0, *(FALLBACK_PENALIZERS if takes_penalizer else ())):
        keyword = {"penalizer_coef": penalizer} if penalizer else {}
        try:
            # lifetimes/scipy print optimiser dumps on failure: keep them out of the table.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted = baselines.bg_nbd_gamma_gamma(
                    features,
                    features,
                    options.clv_horizon_days,
                    options.churn_horizon_days,
                    **keyword,
                )
                if fitted is None:
                    return MethodScores(
                        None, None, error="lifetimes is not installed (extra `bench`)"
                    )
                probability = _no_purchase_probability(
                    fitted.parameters, features, options.churn_horizon_days
                )
                purchases = _bg_nbd_purchases(fitted.parameters, features, options.clv_horizon_days)
                propensity = 1.0 - _no_purchase_probability(
                    fitted.parameters, features, options.propensity_days
                )
        except Exception as exc:  # any failure of an optional comparison is reported, not raised
            message = " ".join(str(exc).split())[:200]
            failures.append(f"penalizer {penalizer:g}: {type(exc).__name__}: {message}")
            continue
        params = ", ".join(f"{k}={v:.4g}" for k, v in sorted(fitted.parameters.items()))
        return MethodScores(
            clv=fitted.clv,
            churn_score=fitted.churn_score,
            churn_probability=probability,
            orders=purchases,
            propensity=propensity,
            notes=f"lifetimes, fitted at the origin on these customers: {params}",
            extra={"penalizer": penalizer, "failed_fits": failures},
        )
    return MethodScores(None, None, error="; ".join(failures))


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


def check_windows(engine: Engine, options: BacktestOptions) -> None:
    """Refuse origins whose label windows reach past the last stored order (unless allowed)."""
    extent = order_log_extent(engine)
    if extent.last is None or extent.first is None:
        raise BacktestError("no orders or refunds stored: import a transaction log first")
    origins = options.origin_list()
    if origins[0] <= extent.first:
        raise BacktestError(
            f"the first origin {origins[0]:%Y-%m-%d} is not after the first order ({extent.first:%Y-%m-%d})"
        )
    horizon = max(options.clv_horizon_days, options.churn_horizon_days)
    window_end = origins[-1] + dt.timedelta(days=horizon)
    # By calendar day: a log that ends at noon on its last day still covers a window ending that day.
    if window_end.date() > extent.last.date() and not options.allow_partial_window:
        latest = extent.last - dt.timedelta(days=horizon)
        raise BacktestError(
            f"the last origin's {horizon}-day window ends {window_end:%Y-%m-%d}, after the last stored "
            f"order ({extent.last:%Y-%m-%d}): its labels would be incomplete. Use --last-origin "
            f"{latest:%Y-%m-%d} or earlier (or --allow-partial-window)"
        )


def run_origin(
    engine: Engine, options: BacktestOptions, origin: dt.datetime, trainer: Trainer = train
) -> dict[str, Any]:
    """Train, score, label and evaluate every method at one origin."""
    matrix = offline_matrix(engine, origin)
    entry: dict[str, Any] = {
        "origin": origin.isoformat(),
        "customers": len(matrix),
        "clv_window_end": (origin + dt.timedelta(days=options.clv_horizon_days)).isoformat(),
        "churn_window_end": (origin + dt.timedelta(days=options.churn_horizon_days)).isoformat(),
    }
    if not len(matrix):
        entry["methods"] = {m: {"status": "failed", "reason": "no customers"} for m in METHODS}
        return entry
    clv_actual, orders_actual = window_labels(
        engine, origin, options.clv_horizon_days, matrix.customer_ids
    )
    _, churn_orders = window_labels(engine, origin, options.churn_horizon_days, matrix.customer_ids)
    churned = (churn_orders == 0).astype(np.float64)
    _, soon = window_labels(engine, origin, options.propensity_days, matrix.customer_ids)
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


SUMMARY_METRICS = (
    "gini",
    "spearman",
    "auc",
    "brier",
    "bias",
    "top10_share",
    # Issue 11.
    "coverage_80",
    "orders_mae",
    "orders_bias",
    "propensity_auc",
    "propensity_brier",
)


def _average(entries: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name in METHODS:
        out[name] = {}
        for metric in SUMMARY_METRICS:
            values = [
                e["methods"][name][metric]
                for e in entries
                if e["methods"].get(name, {}).get("status") == "ok"
                and e["methods"][name].get(metric) is not None
            ]
            out[name][metric] = float(np.mean(values)) if values else None
        out[name]["origins_ok"] = float(
            sum(e["methods"].get(name, {}).get("status") == "ok" for e in entries)
        )
    return out


def verdict(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the model loses to a baseline, its worst origin, and the bias bar, in plain words."""
    losses: list[dict[str, Any]] = []
    worst: dict[str, Any] | None = None
    worst_bg: dict[str, Any] | None = None
    bias_misses: list[dict[str, Any]] = []
    failed: list[str] = []
    fitted_with: list[str] = []
    for e in entries:
        methods = e["methods"]
        model = methods.get("model", {})
        if model.get("status") != "ok":
            failed.append(f"model at {e['origin'][:10]}: {model.get('reason')}")
            continue
        bias = model.get("bias")
        if bias is not None and abs(bias - 1.0) > BIAS_TOLERANCE:
            bias_misses.append({"origin": e["origin"], "bias": bias})
        penalized = methods.get("bg_nbd_gamma_gamma", {})
        if penalized.get("status") == "ok" and penalized.get("penalizer"):
            tried = ", ".join(
                f.split(":")[0].removeprefix("penalizer ") for f in penalized["failed_fits"]
            )
            errors = sorted({f.split(":")[1].strip() for f in penalized["failed_fits"]})
            fitted_with.append(
                f"BG/NBD + Gamma-Gamma at {e['origin'][:10]} fitted only with penalizer "
                f"{penalized['penalizer']:g} (penalizer {tried}: {', '.join(errors)})"
            )
        for name in METHODS[1:]:
            base = methods.get(name, {})
            if name in CHALLENGER_METHODS and str(base.get("reason", "")).startswith("not trained"):
                continue
            if base.get("status") != "ok":
                failed.append(f"{name} at {e['origin'][:10]}: {base.get('reason')}")
                continue
            for metric in RANK_METRICS:
                ours, theirs = model.get(metric), base.get(metric)
                if ours is None or theirs is None:
                    continue
                margin = ours - theirs
                if margin <= 0:
                    losses.append(
                        {
                            "origin": e["origin"],
                            "baseline": name,
                            "metric": metric,
                            "model": ours,
                            "baseline_value": theirs,
                        }
                    )
                candidate = {
                    "origin": e["origin"],
                    "baseline": name,
                    "metric": metric,
                    "model": ours,
                    "baseline_value": theirs,
                    "margin": margin,
                }
                if worst is None or margin < worst["margin"]:
                    worst = candidate
                if name == "bg_nbd_gamma_gamma" and (
                    worst_bg is None or margin < worst_bg["margin"]
                ):
                    worst_bg = candidate
    lines = []
    for loss in losses:
        lines.append(
            f"model loses to {TITLES[loss['baseline']]} on {loss['metric']} at {loss['origin'][:10]}: "
            f"{loss['model']:.4f} vs {loss['baseline_value']:.4f}"
        )
    for miss in bias_misses:
        lines.append(
            f"model aggregate bias {miss['bias']:.3f} at {miss['origin'][:10]} is outside 1 ± {BIAS_TOLERANCE:.2f}"
        )
    lines += [f"failed: {f}" for f in failed]
    lines += fitted_with
    for label, w in (("worst origin", worst), ("worst origin vs BG/NBD + Gamma-Gamma", worst_bg)):
        if w is not None and (label == "worst origin" or w is not worst):
            lines.append(
                f"{label}: {w['origin'][:10]}, {w['metric']} vs {TITLES[w['baseline']]}: "
                f"model {w['model']:.4f}, baseline {w['baseline_value']:.4f} "
                f"(margin {w['margin']:+.4f})"
            )
    beats_bg = all(not (loss["baseline"] == "bg_nbd_gamma_gamma") for loss in losses) and not any(
        f.startswith(("model", "bg_nbd_gamma_gamma")) for f in failed
    )
    coverage_misses = _coverage_misses(entries)
    lines += [
        f"80 % CLV interval covers {m['coverage']:.3f} at {m['origin'][:10]}, outside "
        f"{COVERAGE_TARGET:.2f} ± {COVERAGE_TOLERANCE:.2f}"
        for m in coverage_misses
    ]
    return {
        "coverage_within_bar_everywhere": not coverage_misses,
        "coverage_misses": coverage_misses,
        "beats_bg_nbd_everywhere": beats_bg,
        "bias_within_tolerance_everywhere": not bias_misses,
        "losses": losses,
        "bias_misses": bias_misses,
        "failed": failed,
        "penalized_bg_nbd": fitted_with,
        "worst_origin": worst,
        "worst_origin_vs_bg_nbd": worst_bg,
        "lines": lines,
    }


def _coverage_misses(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Origins where the model's 80 % interval coverage is outside the bar (issue 11)."""
    misses = []
    for e in entries:
        coverage = e["methods"].get("model", {}).get("coverage_80")
        if coverage is not None and abs(coverage - COVERAGE_TARGET) > COVERAGE_TOLERANCE + 1e-12:
            misses.append({"origin": e["origin"], "coverage": coverage})
    return misses


def prediction_lines(entry: dict[str, Any], propensity_days: int) -> list[str]:
    """Issue 11's per-origin text: interval coverage (by decile), orders and propensity metrics."""
    methods = entry["methods"]
    model = methods.get("model", {})
    if model.get("status") != "ok" or model.get("coverage_80") is None:
        return []
    deciles = " ".join(f"{d['coverage']:.2f}" for d in model["coverage_by_decile"])
    lines = [
        f"  80 % CLV interval: coverage {model['coverage_80']:.3f} (below p10 "
        f"{model['below_p10']:.3f}, above p90 {model['above_p90']:.3f}); by decile 1..10: {deciles}",
        f"  {'method':<22} {'orders MAE':>10} {'orders bias':>11} "
        f"{f'P(order {propensity_days}d) AUC':>20} {'Brier':>7}",
    ]
    for name, m in methods.items():
        if m.get("status") != "ok" or (
            m.get("orders_mae") is None and m.get("propensity_auc") is None
        ):
            continue
        lines.append(
            f"  {TITLES.get(name, name):<22} {_fmt(m.get('orders_mae')):>10} "
            f"{_fmt(m.get('orders_bias'), 3):>11} {_fmt(m.get('propensity_auc')):>20} "
            f"{_fmt(m.get('propensity_brier')):>7}"
        )
    return lines


def prediction_html(entry: dict[str, Any], propensity_days: int) -> str:
    """Issue 11's per-origin HTML: coverage by decile, orders and propensity per method."""
    methods = entry["methods"]
    model = methods.get("model", {})
    if model.get("status") != "ok" or model.get("coverage_80") is None:
        return ""
    coverage = _html_table(
        ("Decile", "Customers", "80 % interval coverage", "Share with actual 0"),
        (
            [
                str(d["decile"]),
                str(d["customers"]),
                f"{d['coverage']:.3f}",
                f"{d['zero_actual_share']:.3f}",
            ]
            for d in model["coverage_by_decile"]
        ),
    )
    others = _html_table(
        ("Method", "Orders MAE", "Orders bias", f"P(order in {propensity_days} d) AUC", "Brier"),
        (
            [
                TITLES.get(name, name),
                _fmt(m.get("orders_mae")),
                _fmt(m.get("orders_bias"), 3),
                _fmt(m.get("propensity_auc")),
                _fmt(m.get("propensity_brier")),
            ]
            for name, m in methods.items()
            if m.get("status") == "ok" and m.get("orders_mae") is not None
        ),
    )
    return (
        f"<p>80 % CLV interval coverage {model['coverage_80']:.3f} (below p10 "
        f"{model['below_p10']:.3f}, above p90 {model['above_p90']:.3f}); by decile of predicted "
        f"CLV (1 = highest):</p>{coverage}<p>Expected orders over the CLV horizon and probability "
        f"of an order within {propensity_days} days:</p>{others}"
    )


def run_backtest(
    engine: Engine,
    options: BacktestOptions,
    trainer: Trainer = train,
    on_origin: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """All origins, their averages and the verdict, as a JSON-able dict (`run` holds timings)."""
    check_windows(engine, options)
    started = time.perf_counter()
    entries = []
    for origin in options.origin_list():
        entry = run_origin(engine, options, origin, trainer)
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
        "average": _average(entries),
        "verdict": verdict(entries),
        # Not part of the result proper: differs run to run.
        "run": {"seconds": round(time.perf_counter() - started, 2)},
    }


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def origin_table(entry: dict[str, Any]) -> list[str]:
    """Text rows for one origin."""
    lines = [
        f"origin {entry['origin'][:10]}: {entry['customers']:,} customers, actual next-period value "
        f"{entry.get('actual_total', 0):,.0f}, churn rate {entry.get('churn_rate', 0):.3f}",
        f"  {'method':<22} {'gini':>7} {'spearman':>8} {'auc':>7} {'brier':>7} {'bias':>6} {'top10%':>7}",
    ]
    for name in METHODS:
        m = entry["methods"].get(name, {})
        if m.get("status") != "ok":
            lines.append(f"  {TITLES[name]:<22} FAILED: {m.get('reason')}")
            continue
        lines.append(
            f"  {TITLES[name]:<22} {_fmt(m['gini']):>7} {_fmt(m['spearman']):>8} {_fmt(m['auc']):>7} "
            f"{_fmt(m['brier']):>7} {_fmt(m['bias'], 3):>6} {_fmt(m['top10_share'], 3):>7}"
        )
    return lines


def headline(v: dict[str, Any]) -> str:
    """The two bars of issue 10 in one sentence."""
    beats = (
        "the model beats BG/NBD + Gamma-Gamma on Gini, Spearman and churn AUC at every origin"
        if v["beats_bg_nbd_everywhere"]
        else "the model does NOT beat BG/NBD + Gamma-Gamma everywhere"
    )
    bias = (
        f"aggregate bias within ±{BIAS_TOLERANCE:.0%} at every origin"
        if v["bias_within_tolerance_everywhere"]
        else f"aggregate bias outside ±{BIAS_TOLERANCE:.0%} somewhere"
    )
    coverage = (
        ""
        if "coverage_within_bar_everywhere" not in v
        else "; 80 % CLV interval coverage within "
        f"{COVERAGE_TARGET:.2f} ± {COVERAGE_TOLERANCE:.2f} at every origin"
        if v["coverage_within_bar_everywhere"]
        else f"; 80 % CLV interval coverage outside {COVERAGE_TARGET:.2f} ± "
        f"{COVERAGE_TOLERANCE:.2f} somewhere"
    )
    return f"{beats}; {bias}{coverage}"


def text_table(result: dict[str, Any]) -> str:
    """The whole result as a plain-text table (per origin, averages, verdict)."""
    lines: list[str] = []
    days = result["options"].get("propensity_days", 30)
    for entry in result["origins"]:
        lines += [*origin_table(entry), *prediction_lines(entry, days), ""]
    n = len(result["origins"])
    lines.append(f"average over {n} origins")
    lines.append(
        f"  {'method':<22} {'gini':>7} {'spearman':>8} {'auc':>7} {'brier':>7} {'bias':>6} {'top10%':>7}"
    )
    for name in METHODS:
        a = result["average"][name]
        lines.append(
            f"  {TITLES[name]:<22} {_fmt(a['gini']):>7} {_fmt(a['spearman']):>8} {_fmt(a['auc']):>7} "
            f"{_fmt(a['brier']):>7} {_fmt(a['bias'], 3):>6} {_fmt(a['top10_share'], 3):>7}"
        )
    v = result["verdict"]
    lines.append("")
    lines.append(f"verdict: {headline(v)}")
    lines += [f"  {line}" for line in v["lines"]]
    return "\n".join(lines)


def _html_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_METRIC_HEADER = ("Method", "Gini", "Spearman", "Churn AUC", "Brier", "Bias", "Top 10 % share")


def _metric_row(name: str, m: dict[str, Any]) -> list[str]:
    if m.get("status", "ok") != "ok":
        return [TITLES[name], f"failed: {m.get('reason')}", "", "", "", "", ""]
    return [
        TITLES[name],
        _fmt(m.get("gini")),
        _fmt(m.get("spearman")),
        _fmt(m.get("auc")),
        _fmt(m.get("brier")),
        _fmt(m.get("bias"), 3),
        _fmt(m.get("top10_share"), 3),
    ]


def html_section(result: dict[str, Any], title: str = "Out-of-time backtest") -> str:
    """A self-contained HTML section (no scripts): averages, verdict, per-origin tables, deciles."""
    o = result["options"]
    parts = [
        f"<section class='backtest'><h2>{html.escape(title)}</h2>",
        f"<p>{o['origins']} origins every {o['step_days']} days up to {html.escape(o['last_origin'][:10])}; "
        f"CLV horizon {o['clv_horizon_days']} days, churn horizon {o['churn_horizon_days']} days. "
        "Each origin trains only on what was known then and is scored on what followed.</p>",
        "<h3>Average over origins</h3>",
        _html_table(_METRIC_HEADER, (_metric_row(n, result["average"][n]) for n in METHODS)),
        f"<h3>Verdict</h3><p>{html.escape(headline(result['verdict']))}.</p><ul>",
        *(f"<li>{html.escape(line)}</li>" for line in result["verdict"]["lines"]),
        "</ul>",
    ]
    for entry in result["origins"]:
        parts.append(
            f"<h3>Origin {html.escape(entry['origin'][:10])}</h3><p>{entry['customers']:,} customers, "
            f"actual next-period value {entry.get('actual_total', 0):,.2f}, churn rate "
            f"{entry.get('churn_rate', 0):.3f}</p>"
        )
        parts.append(
            _html_table(
                _METRIC_HEADER, (_metric_row(n, entry["methods"].get(n, {})) for n in METHODS)
            )
        )
        model = entry["methods"].get("model", {})
        if model.get("status") == "ok":
            parts.append("<p>Model decile calibration (1 = highest predictions)</p>")
            parts.append(
                _html_table(
                    ("Decile", "Customers", "Mean predicted", "Mean actual", "Share of actual"),
                    (
                        [
                            str(d["decile"]),
                            str(d["customers"]),
                            f"{d['mean_predicted']:.2f}",
                            f"{d['mean_actual']:.2f}",
                            f"{d['share_of_actual']:.3f}",
                        ]
                        for d in model["deciles"]
                    ),
                )
            )
        parts.append(prediction_html(entry, o.get("propensity_days", 30)))
    parts.append("</section>")
    return "\n".join(parts)


def write_html(path: Path, result: dict[str, Any], title: str = "Out-of-time backtest") -> None:
    """A standalone HTML page around `html_section`."""
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
    )
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{html_section(result, title)}</body></html>\n"
    )
