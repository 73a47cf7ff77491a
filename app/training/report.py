"""The model card (report.html): one self-contained page, metrics from scikit-learn / scipy,
figures drawn by matplotlib and inlined as SVG (no JavaScript, no network).

This module assembles the page (sections, navigation, style); the models and their metrics are
report_scores, the text and table sections report_sections, the figures report_figures (which
also says how the SVG is kept deterministic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.training.report_figures import Charts
from app.training.report_scores import (
    IMPORTANCE_TYPE,
    PALETTE,
    EvaluatedModel,
    as_vector,
    score_model,
)
from app.training.report_sections import (
    challengers_section,
    chart_row,
    eligibility_section,
    esc,
    facts_card,
    holdout_section,
    metrics_section,
    out_of_time_section,
    ranges_section,
)


def render_report(
    *,
    title: str,
    summary: dict[str, str],
    clv_actual: np.ndarray,
    churn_actual: np.ndarray,
    models: list[EvaluatedModel],
    clv_horizon_days: int,
    churn_horizon_days: int,
    currency: str,
    manifest: Any = None,
    importance_type: str = IMPORTANCE_TYPE,
) -> str:
    """The whole self-contained HTML page (`manifest`: an app.artifacts.Manifest, optional)."""
    clv_actual = as_vector(clv_actual)
    churn_actual = as_vector(churn_actual)
    scored = [
        score_model(model, PALETTE[i % len(PALETTE)], clv_actual, churn_actual)
        for i, model in enumerate(models)
    ]
    charts = Charts()
    parts: list[tuple[str, str, str]] = [
        (
            "data",
            "Data and eligibility",
            facts_card(summary)
            + eligibility_section(manifest)
            + holdout_section(clv_actual, churn_actual, currency),
        ),
        (
            "metrics",
            "Holdout metrics (in time)",
            metrics_section(scored, clv_horizon_days, churn_horizon_days, currency),
        ),
        ("out-of-time", "In time vs out of time", out_of_time_section(manifest)),
        ("challengers", "Challengers and baselines", challengers_section(manifest)),
        (
            "gain",
            "Cumulative gain (Lorenz curve)",
            chart_row([charts.lorenz(clv_actual, scored, clv_horizon_days)]),
        ),
        (
            "deciles",
            "Predicted vs actual CLV by decile",
            chart_row(charts.deciles(clv_actual, scored, clv_horizon_days, currency)),
        ),
        (
            "churn",
            "Churn: reliability and ranking",
            chart_row(
                [
                    charts.reliability(churn_actual, scored, churn_horizon_days),
                    charts.roc(churn_actual, scored, churn_horizon_days),
                ]
            ),
        ),
        ("coverage", "CLV interval coverage", _coverage(manifest, charts)),
        (
            "importance",
            "Feature importance",
            f'<p class="note">Importance type: {esc(importance_type)}.</p>'
            + chart_row(charts.importance(scored)),
        ),
        ("ranges", "Feature training ranges", ranges_section(manifest)),
    ]
    nav = " · ".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label, _ in parts)
    sections = "".join(
        f'<section id="{anchor}"><h2>{esc(label)}</h2>{content}</section>'
        for anchor, label, content in parts
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><header><h1>{esc(title)}</h1><nav>{nav}</nav></header>"
        f"{sections}</main></body></html>\n"
    )


def write_report(path: Path, **kwargs: Any) -> None:
    """render_report(**kwargs) written to path (UTF-8)."""
    Path(path).write_text(render_report(**kwargs), encoding="utf-8")


def _coverage(manifest: Any, charts: Charts) -> str:
    intervals = getattr(manifest, "clv_intervals", None) or {}
    coverage = intervals.get("coverage_80")
    if coverage is None:
        method = intervals.get("method")
        return (
            '<p class="na">Interval coverage: not available in this manifest'
            + (f" (intervals: {esc(method)})" if method else "")
            + ".</p>"
        )
    text = f"<p>80 % interval coverage on the holdout: <strong>{coverage:.1%}</strong> (target 80 % ± 5 points).</p>"
    if intervals.get("nominal_level") is not None:
        # Issue 11: what the interval promises (marginal coverage) and how it was calibrated.
        text += (
            "<p>Calibrated for <strong>marginal</strong> coverage of "
            f"{float(intervals.get('target_coverage', 0.8)):.0%} on "
            f"{int(intervals.get('calibration_rows', 0)):,} out-of-time rows (fold gap "
            f"{intervals.get('gap_days')} days): nominal per-bin level "
            f"{float(intervals['nominal_level']):.3f}, reaching "
            f"{float(intervals.get('calibration_coverage', 0.0)):.1%} on the fold. Deciles where "
            "most customers buy nothing cover at least their zero share, the others less "
            "(docs/predictions.md).</p>"
        )
    non_buyers = intervals.get("non_buyers") or {}
    if non_buyers.get("share") is not None:
        text += (
            "<p>Shifted to the next horizon's expected share of non-buyers: "
            f"<strong>{float(non_buyers['share']):.1%}</strong> (BG/NBD on "
            f"{int(non_buyers.get('customers', 0)):,} customers known at training time) "
            f"against {float(non_buyers.get('fold_share', 0.0)):.1%} in the fold's window (label "
            "shift). Coverage follows that share; the holdout lies in the fold's window, so it "
            "covers less than 80 % when more non-buyers are expected, more when fewer are.</p>"
        )
    elif non_buyers:
        text += f'<p class="na">Not shifted: {esc(str(non_buyers.get("reason")))}.</p>'
    if intervals.get("below_p10") is not None:
        text += (
            f"<p>Holdout: below p10 {float(intervals['below_p10']):.1%}, above p90 "
            f"{float(intervals['above_p90']):.1%}; interval width median "
            f"{float(intervals['width_median']):,.2f}, mean {float(intervals['width_mean']):,.2f}.</p>"
        )
    by_decile = intervals.get("coverage_by_decile")
    if by_decile:
        zeros = intervals.get("zero_share_by_decile") or None
        text += chart_row(
            [
                charts.coverage(
                    [float(v) for v in by_decile], [float(v) for v in zeros] if zeros else None
                )
            ]
        )
    return text


_CSS = """
body{margin:0;background:#f6f7f9;color:#111827;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
header h1{font-size:22px;margin:0 0 6px}
nav{color:#6b7280;font-size:13px;margin-bottom:14px}
nav a{color:#2563eb;text-decoration:none}
section{margin:26px 0}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:12px 0 6px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px 16px;overflow-x:auto}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 20px;margin:0}
dl.facts dt{color:#6b7280}
dl.facts dd{margin:0;overflow-wrap:anywhere}
table.metrics{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
table.metrics th,table.metrics td{padding:6px 10px;border-bottom:1px solid #e5e7eb;text-align:right;
vertical-align:top}
table.metrics th{font-weight:600;color:#374151;white-space:nowrap}
table.metrics th.group{text-align:center;color:#6b7280;font-weight:500;border-bottom:1px solid #d1d5db}
table.metrics td.model,table.metrics th:first-child{text-align:left}
table.metrics td.best{font-weight:700;background:#dcfce7;color:#14532d}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:7px}
.note{color:#6b7280;font-size:12px;margin:6px 0 0}
td .note{margin:0}
.na{color:#6b7280}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;max-width:100%;background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px}
figure svg{display:block;width:100%;height:auto}
figcaption{color:#6b7280;font-size:12.5px;padding:6px 4px 2px}
@media print{body{background:#fff}figure,.card{break-inside:avoid}}
""".replace("\n", "")
