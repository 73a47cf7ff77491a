"""A backtest's summary: each method's averages over the origins, and the verdict (where the
model loses to a baseline, its worst origin, the bias and interval-coverage bars) in words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.training.backtest_plan import CHALLENGER_METHODS, METHODS, TITLES
from app.training.backtest_scores import COVERAGE_TARGET, COVERAGE_TOLERANCE

#: Metrics where higher is better, compared model vs baseline for the verdict.
RANK_METRICS = ("gini", "spearman", "auc")
BIAS_TOLERANCE = 0.10


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


def average(entries: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
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
