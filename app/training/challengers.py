"""Challengers from the seed articles: linear (ridge + logistic) and MLP models, ONNX-exported.

Each family is a scikit-learn Pipeline on the same features as XGBoost: median imputation (a
guard: the feature definitions already give every no-order customer defined values), a signed
log1p (revenue and day counts are heavy-tailed, refunds make some negative), standardisation,
then the estimator. The graph (app.training.challenger_graph) computes all of it in float64 from
the served float32 input, with the input name and output positions of the XGBoost graphs
(app.scoring.onnx: out[0] the CLV values, out[1] the [n, 2] class probabilities), so the
predictor serves a challenger unchanged. The CLV regressors fit signed_log1p(CLV): a linear model
of raw heavy-tailed revenue extrapolates wildly. The graph maps the margin back to currency and
multiplies it by a smearing factor (training total / total of the back-transformed fit), so the
exported model is in currency and its training total matches the labels'.

Just over 400 lines: both families' fit, out-of-time choice and export share one option set and
one parity check; the graph building already lives in app.training.challenger_graph.

Champion selection is out of time: every family's fold model (older cutoffs only) is scored on
the holdout customers at the latest cutoff, like XGBoost's `metrics_out_of_time["model"]`, and
per target the best family there serves (app.training.train, `--challengers`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from app.training.challenger_graph import assemble, signed_expm1, signed_log1p
from app.training.export import compare

#: Challenger families (each has a CLV regressor and a churn classifier) and their names per target.
FAMILIES = ("linear", "mlp")
MODEL_NAMES = {
    "linear": {"clv": "ridge", "churn": "logistic"},
    "mlp": {"clv": "mlp", "churn": "mlp"},
}
TITLES = {"linear": "Ridge + logistic regression", "mlp": "MLP (scikit-learn)"}
#: The out-of-time metric that picks the champion of each target (higher is better).
SELECTION = {"clv": "gini", "churn": "auc"}
#: MLPs: small, early-stopped on an internal 10 % split, seeded; enough for ~20 features.
MLP_HIDDEN = (32, 16)
MLP_MAX_ITER = 200
#: MLPs fit on at most this many rows (a seeded sample): stochastic gradient epochs over every
#: stacked row cost minutes on CDNOW's ~150k rows for no measurable gain in ranking.
MLP_MAX_ROWS = 20_000


def _prepare() -> list[tuple[str, Any]]:
    return [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("log", FunctionTransformer(signed_log1p)),
        ("scale", StandardScaler()),
    ]


def clv_pipeline(family: str, seed: int) -> Pipeline:
    """The unfitted CLV regressor of `family`."""
    if family == "linear":
        model: Any = Ridge(alpha=1.0)
    elif family == "mlp":
        model = MLPRegressor(
            hidden_layer_sizes=MLP_HIDDEN,
            alpha=1e-3,
            early_stopping=True,
            max_iter=MLP_MAX_ITER,
            random_state=seed,
        )
    else:
        raise ValueError(f"unknown challenger family {family!r}")
    return Pipeline([*_prepare(), ("model", model)])


def churn_pipeline(family: str, seed: int) -> Pipeline:
    """The unfitted churn classifier of `family`."""
    if family == "linear":
        model: Any = LogisticRegression(C=1.0, max_iter=2000)
    elif family == "mlp":
        model = MLPClassifier(
            hidden_layer_sizes=MLP_HIDDEN,
            alpha=1e-3,
            early_stopping=True,
            max_iter=MLP_MAX_ITER,
            random_state=seed,
        )
    else:
        raise ValueError(f"unknown challenger family {family!r}")
    return Pipeline([*_prepare(), ("model", model)])


def _as_served(features: np.ndarray) -> np.ndarray:
    # The graph's input is float32 (the served contract): fit and predict on the same values.
    return np.asarray(features, dtype=np.float32).astype(np.float64)


@dataclass
class Regressor:
    """A fitted CLV pipeline on signed_log1p(CLV), and the smearing factor back to currency."""

    pipeline: Pipeline
    smear: float

    def margin(self, features: np.ndarray) -> np.ndarray:
        """The estimator's output: signed_log1p of CLV / smear."""
        return np.asarray(self.pipeline.predict(_as_served(features)), dtype=np.float64).ravel()

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Native predictions on float32 inputs (what ONNX sees), in currency."""
        return self.smear * signed_expm1(self.margin(features))


@dataclass
class Classifier:
    """A fitted churn pipeline."""

    pipeline: Pipeline

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(churn) on float32 inputs (what ONNX sees)."""
        return np.asarray(self.pipeline.predict_proba(_as_served(features)), dtype=np.float64)[:, 1]


def _sample(pipeline: Pipeline, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[Any, Any]:
    if isinstance(pipeline.named_steps["model"], MLPRegressor | MLPClassifier) and (
        len(x) > MLP_MAX_ROWS
    ):
        keep = np.sort(np.random.default_rng(seed).choice(len(x), MLP_MAX_ROWS, replace=False))
        return x[keep], y[keep]
    return x, y


def _quiet_fit(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        # A capped MLP reports non-convergence; the out-of-time metrics judge it anyway.
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(_as_served(x), y)
    return pipeline


def fit_clv(family: str, features: np.ndarray, label: np.ndarray, seed: int) -> Regressor:
    """Fit the CLV regressor of `family` on signed_log1p(CLV), with the smearing factor that
    makes the back-transformed fit's total equal the labels' total on the fitted rows."""
    x, y = _sample(clv_pipeline(family, seed), features, np.asarray(label, np.float64), seed)
    pipeline = _quiet_fit(clv_pipeline(family, seed), x, signed_log1p(y))
    fitted = float(signed_expm1(pipeline.predict(_as_served(x))).sum())
    total = float(y.sum())
    # E[y] is not expm1(E[log1p y]): without it the back-transform under-forecasts the total.
    smear = total / fitted if fitted > 0 and total > 0 else 1.0
    return Regressor(pipeline, smear)


def fit_churn(family: str, features: np.ndarray, label: np.ndarray, seed: int) -> Classifier:
    """Fit the churn classifier of `family`."""
    x, y = _sample(churn_pipeline(family, seed), features, label.astype(int), seed)
    return Classifier(_quiet_fit(churn_pipeline(family, seed), x, y))


def _prep(pipeline: Pipeline) -> dict[str, np.ndarray]:
    """The fitted preprocessing as vectors: imputation medians, log-space mean and scale."""
    return {
        "median": np.asarray(pipeline.named_steps["impute"].statistics_, dtype=np.float64),
        "mean": np.asarray(pipeline.named_steps["scale"].mean_, dtype=np.float64),
        "scale": np.asarray(pipeline.named_steps["scale"].scale_, dtype=np.float64),
    }


def clv_to_onnx(model: Regressor, n_features: int, path: Path) -> None:
    """Export the regressor: float64 inside, margin mapped back to currency inside the graph."""
    graph = assemble(
        model.pipeline.named_steps["model"],
        _prep(model.pipeline),
        n_features,
        path.stem,
        smear=model.smear,
    )
    path.write_bytes(graph.SerializeToString())


def churn_to_onnx(model: Classifier, n_features: int, path: Path) -> None:
    """Export the classifier: out[0] labels, out[1] an [n, 2] probability tensor (no ZipMap)."""
    graph = assemble(
        model.pipeline.named_steps["model"], _prep(model.pipeline), n_features, path.stem, None
    )
    path.write_bytes(graph.SerializeToString())


def linear_explainer(model: Regressor | Classifier, target: str) -> dict[str, Any] | None:
    """What app.scoring.explain.LinearExplainer needs to explain a linear family exactly
    (preprocessing vectors, coefficients, intercept, and for CLV the smearing factor);
    None for a non-linear estimator."""
    estimator = model.pipeline.named_steps["model"]
    if not isinstance(estimator, Ridge | LogisticRegression):
        return None
    prep = _prep(model.pipeline)
    return {
        "target": target,
        "model": type(estimator).__name__,
        "median": prep["median"].tolist(),
        "mean": prep["mean"].tolist(),
        "scale": prep["scale"].tolist(),
        "coef": np.asarray(estimator.coef_, dtype=np.float64).ravel().tolist(),
        "intercept": float(np.asarray(estimator.intercept_, dtype=np.float64).ravel()[0]),
        "smear": model.smear if isinstance(model, Regressor) else None,
    }


def parity(
    clv: Regressor, churn: Classifier, clv_path: Path, churn_path: Path, features: np.ndarray
) -> dict[str, Any]:
    """Native vs ONNX with app.training.export's rule; `passed` False beyond its tolerance."""
    return compare(
        clv.predict(features), churn.predict(features), clv_path, churn_path, features
    ).model_dump()


#: Families whose models are linear in the standardised features: explained exactly.
EXPLAINED = frozenset({"linear"})


def file_names(family: str) -> dict[str, str]:
    """The artifact files of one challenger family (ONNX graphs; explainers when linear)."""
    files = {"clv": f"clv_{family}.onnx", "churn": f"churn_{family}.onnx"}
    if family in EXPLAINED:
        files |= {f"{t}_explain": f"{t}_{family}.explain.json" for t in ("clv", "churn")}
    return files


@dataclass
class Challenger:
    """One family trained like XGBoost: fold model judged out of time, final refit exported."""

    family: str
    files: dict[str, str]
    parity: dict[str, Any]
    fold_holdout: dict[str, np.ndarray]  # fold-model predictions on the holdout rows
    metrics_out_of_time: dict[str, float] = field(default_factory=dict)
    #: CLV p10/p50/p90 calibrated on this family's own out-of-time predictions (served if it wins).
    clv_intervals: dict[str, Any] = field(default_factory=dict)


def serve_clv(raw: np.ndarray) -> np.ndarray:
    """Challenger CLV as served: no negative revenue (a ridge can go below zero)."""
    return np.asarray(np.maximum(raw, 0.0), dtype=np.float64)


def train_family(
    family: str,
    clv_split: Any,
    churn_split: Any,
    seed: int,
    directory: Path,
    non_buyers_share: float | None = None,
) -> Challenger:
    """Fold fit -> holdout predictions; refit on every training row -> ONNX + parity. The CLV
    interval is calibrated on the fold model's validation predictions, shifted to
    `non_buyers_share` like XGBoost's (app.training.intervals.label_shift_weights)."""
    n_features = clv_split.train.features.shape[1]
    fold_clv = fit_clv(family, clv_split.fold.features, clv_split.fold.label, seed)
    fold_churn = fit_churn(family, churn_split.fold.features, churn_split.fold.label, seed)
    final_clv = fit_clv(family, clv_split.train.features, clv_split.train.label, seed)
    final_churn = fit_churn(family, churn_split.train.features, churn_split.train.label, seed)
    files = file_names(family)
    clv_to_onnx(final_clv, n_features, directory / files["clv"])
    churn_to_onnx(final_churn, n_features, directory / files["churn"])
    for target, model in (("clv", final_clv), ("churn", final_churn)):
        explainer = linear_explainer(model, target)
        if f"{target}_explain" in files and explainer is not None:
            (directory / files[f"{target}_explain"]).write_text(
                json.dumps(explainer, indent=1, sort_keys=True) + "\n"
            )
    checked = parity(
        final_clv,
        final_churn,
        directory / files["clv"],
        directory / files["churn"],
        np.vstack([clv_split.holdout.features, churn_split.holdout.features]),
    )
    from app.training.calibration import fit_intervals
    from app.training.intervals import label_shift_weights

    label = clv_split.validation.label
    return Challenger(
        family=family,
        files=files,
        parity=checked,
        clv_intervals=fit_intervals(
            serve_clv(fold_clv.predict(clv_split.validation.features)),
            label,
            clv_split.gap_days,
            weights=label_shift_weights(label, non_buyers_share),
        ),
        fold_holdout={
            "clv": serve_clv(fold_clv.predict(clv_split.holdout.features)),
            "churn": fold_churn.predict(churn_split.holdout.features),
        },
    )


def choose_champions(out_of_time: dict[str, dict[str, float]]) -> dict[str, str]:
    """Per target, the family with the best out-of-time SELECTION metric ("xgboost" wins ties).

    `out_of_time` maps a family ("xgboost", "linear", "mlp") to its out-of-time metrics.
    """
    champions: dict[str, str] = {}
    for target, metric in SELECTION.items():
        best, best_value = "xgboost", out_of_time.get("xgboost", {}).get(metric, -np.inf)
        for family in FAMILIES:
            value = out_of_time.get(family, {}).get(metric)
            if value is not None and np.isfinite(value) and value > best_value:
                best, best_value = family, value
        champions[target] = best
    return champions


@dataclass
class Outcome:
    """What the challengers decided for one artifact."""

    challengers: list[Challenger]
    champions: dict[str, str]  # target -> family ("xgboost", "linear", "mlp")

    def manifest_block(self) -> dict[str, Any]:
        """manifest.training["challengers"]: files, parity and out-of-time metrics per family."""
        return {
            c.family: {
                "files": c.files,
                "models": MODEL_NAMES[c.family],
                "parity": c.parity,
                "metrics_out_of_time": c.metrics_out_of_time,
            }
            for c in self.challengers
        }

    def families(self) -> dict[str, str]:
        """manifest.training["families"]: the model family serving each target."""
        return {
            target: "xgboost" if family == "xgboost" else MODEL_NAMES[family][target]
            for target, family in self.champions.items()
        }


def run(
    directory: Path,
    clv_split: Any,
    churn_split: Any,
    seed: int,
    xgboost_out_of_time: dict[str, float],
    score: Any,
    say: Any,
    non_buyers_share: float | None = None,
) -> Outcome:
    """Train every family, judge it out of time with `score`, pick the champion per target.

    A family whose ONNX graph fails the parity check is reported and never chosen.
    """
    trained: list[Challenger] = []
    candidates: dict[str, dict[str, float]] = {"xgboost": xgboost_out_of_time}
    for family in FAMILIES:
        challenger = train_family(family, clv_split, churn_split, seed, directory, non_buyers_share)
        challenger.metrics_out_of_time = score(
            clv_split.holdout.label,
            churn_split.holdout.label,
            challenger.fold_holdout["clv"],
            challenger.fold_holdout["churn"],
        )
        trained.append(challenger)
        p = challenger.parity
        say(
            f"challenger {TITLES[family]}: out of time gini "
            f"{challenger.metrics_out_of_time.get('gini', float('nan')):.4f}, auc "
            f"{challenger.metrics_out_of_time.get('auc', float('nan')):.4f}; ONNX parity "
            f"{'ok' if p['passed'] else 'FAILED (never served)'}"
        )
        if p["passed"]:
            candidates[family] = challenger.metrics_out_of_time
    return Outcome(trained, choose_champions(candidates))


#: Metric keys of the churn side of evaluate.score (the others are CLV metrics).
CHURN_KEYS = frozenset({"auc", "brier", "logloss"})


def serve_champions(outcome: Outcome, directory: Path, manifest: Any) -> None:
    """Copy each winning challenger's graph over the served file, with neutral post-processing.

    The XGBoost graphs stay the served files unless a challenger won out of time. A challenger
    is served as exported: CLV scale 1 (its target scale is inside the graph) and no Platt
    calibration (both challenger classifiers output probabilities fitted by log loss).
    """
    from app.artifacts import CHURN_ONNX, CLV_ONNX, Calibration

    by_family = {c.family: c for c in outcome.challengers}
    for target, served in (("clv", CLV_ONNX), ("churn", CHURN_ONNX)):
        family = outcome.champions[target]
        if family == "xgboost":
            continue
        files = by_family[family].files
        (directory / served).write_bytes((directory / files[target]).read_bytes())
        # Explanations follow the served family: exact for a linear one (its explainer file),
        # refused for another (app.scoring.explain.ExplanationUnavailable).
        if f"{target}_explain" in files:
            manifest.files[f"{target}_explain"] = files[f"{target}_explain"]
        # A combined graph built from the old files would still serve them: drop it (train
        # builds it after this, from the files that now serve).
        manifest.files.pop("combined_onnx", None)
        if target == "clv":
            manifest.training["clv_scale"] = 1.0
            # XGBoost's intervals were calibrated on XGBoost's errors: use the winner's own
            # (shifted to the same expected share of non-buyers, recorded again with it).
            shift = manifest.clv_intervals.get("non_buyers")
            manifest.clv_intervals = dict(by_family[family].clv_intervals)
            if shift is not None and manifest.clv_intervals:
                manifest.clv_intervals["non_buyers"] = shift
        else:
            manifest.churn_calibration = Calibration(method="none")
    manifest.training["families"] = outcome.families()
    manifest.training["challengers"] = outcome.manifest_block()


def record_out_of_time(outcome: Outcome, manifest: Any) -> None:
    """Challenger rows in metrics_out_of_time; the `model` row takes the champions' metrics."""
    by_family = {c.family: c for c in outcome.challengers}
    for challenger in outcome.challengers:
        manifest.metrics_out_of_time[challenger.family] = challenger.metrics_out_of_time
    model = dict(manifest.metrics_out_of_time.get("model", {}))
    manifest.metrics_out_of_time["xgboost"] = dict(model)
    for target, family in outcome.champions.items():
        if family == "xgboost":
            continue
        for key, value in by_family[family].metrics_out_of_time.items():
            if (key in CHURN_KEYS) == (target == "churn"):
                model[key] = value
    manifest.metrics_out_of_time["model"] = model
