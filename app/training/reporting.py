"""From a finished manifest and the holdout evaluation to the artifact's HTML report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.artifacts import Manifest
from app.training.report import write_report
from app.training.report_scores import EvaluatedModel

NAMES = {
    "model": "XGBoost (this model)",
    "spend_rate": "Spend-rate heuristic",
    "bg_nbd_gamma_gamma": "BG/NBD + Gamma-Gamma",
    "xgboost": "XGBoost (out-of-time fold)",
    "linear": "Ridge + logistic (challenger)",
    "mlp": "MLP (challenger)",
}
_KEYS = ("gini", "spearman", "bias", "auc", "brier")


def side_by_side(manifest: Manifest, name: str) -> str:
    """`gini 0.71 / 0.69, ...`: in-time then out-of-time values of one model."""
    in_time = manifest.metrics.get(name, {})
    out = manifest.metrics_out_of_time.get(name, {})
    parts = []
    for key in _KEYS:
        if key in in_time:
            later = f"{out[key]:.4f}" if key in out else "-"
            parts.append(f"{key} {in_time[key]:.4f} / {later}")
    return ", ".join(parts)


def write_training_report(
    path: Path,
    manifest: Manifest,
    clv_actual: np.ndarray,
    churn_actual: np.ndarray,
    entries: list[EvaluatedModel],
) -> None:
    """The report of one artifact: summary, metrics table and charts of the in-time holdout."""
    models = [
        EvaluatedModel(**{**entry.__dict__, "name": NAMES.get(entry.name, entry.name)})
        for entry in entries
    ]
    validation = manifest.validation
    summary = {
        "Version": manifest.version,
        "as_of": manifest.as_of.isoformat(),
        "Horizons": f"CLV {manifest.clv_horizon_days} days, churn {manifest.churn_horizon_days} days",
        "Rows": ", ".join(f"{k} {v:,}" for k, v in manifest.rows.items()),
        "Cutoffs": f"{len(manifest.cutoffs['clv'])} stacked, latest {manifest.cutoffs['clv'][0]:%Y-%m-%d} (CLV) / {manifest.cutoffs['churn'][0]:%Y-%m-%d} (churn)",
        "Split": f"{manifest.split['method']} holdout {manifest.split['holdout_fraction']:.0%}",
        "Out-of-time validation": (
            f"fold gap {validation.get('clv_gap_days')} days (CLV) / "
            f"{validation.get('churn_gap_days')} days (churn); rounds "
            f"{validation.get('clv_rounds')} / {validation.get('churn_rounds')}; CLV scale "
            f"{manifest.training.get('clv_scale', 1.0):.3f}"
        ),
        "Model, in time / out of time": side_by_side(manifest, "model"),
        "ONNX parity": f"{'passed' if manifest.parity.passed else 'FAILED'} (CLV rel {manifest.parity.clv_max_rel_diff:.1e}, churn abs {manifest.parity.churn_max_abs_diff:.1e})",
        "Churn calibration": manifest.churn_calibration.method,
        "Promotion": str(manifest.promotion.get("reason", "")),
    }
    for name, why in manifest.baseline_failures.items():
        summary[f"Baseline {NAMES.get(name, name)}"] = f"not evaluated: {why}"
    write_report(
        path,
        title=f"clv-service model {manifest.version}",
        summary=summary,
        clv_actual=clv_actual,
        churn_actual=churn_actual,
        models=models,
        clv_horizon_days=manifest.clv_horizon_days,
        churn_horizon_days=manifest.churn_horizon_days,
        currency=manifest.currency,
        manifest=manifest,
    )


def metrics_table(manifest: Manifest) -> str:
    """The holdout metrics as `clv train` prints them: in time and out of time side by side."""
    names = list(dict.fromkeys([*manifest.metrics, *manifest.metrics_out_of_time]))
    width = max([len(n) for n in names] + [len("holdout")])
    lines = [
        f"{'':<{width}}  {'in time':<38}  out of time",
        f"{'holdout':<{width}}  " + "  ".join(["gini   spear  bias  auc    brier "] * 2),
    ]

    def cells(values: dict[str, float] | None) -> str:
        if not values:
            return f"{'-':<36}"
        brier = f"{values['brier']:.4f}" if "brier" in values else "  -   "
        return (
            f"{values['gini']:.4f} {values['spearman']:.4f} {values['bias']:.3f} "
            f"{values['auc']:.4f} {brier}"
        )

    for name in names:
        lines.append(
            f"{name:<{width}}  {cells(manifest.metrics.get(name))}  "
            f"{cells(manifest.metrics_out_of_time.get(name))}"
        )
    for name, why in manifest.baseline_failures.items():
        lines.append(f"{name}: not evaluated ({why})")
    return "\n".join(lines)
