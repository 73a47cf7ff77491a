"""The model card (report.html): one self-contained page, metrics from scikit-learn / scipy,
figures drawn by matplotlib and inlined as SVG (no JavaScript, no network).

Determinism: the Agg-free SVG backend is driven through `Figure.savefig(format="svg")` with a
fixed `svg.hashsalt` per figure (unique ids across the inline SVGs of one page), text kept as
text (`svg.fonttype = none`, so the page stays small and searchable) and no metadata date.
The Gini is the normalised Gini of /work/shared/PROTOCOL.md (app.training.metrics).
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    brier_score_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
    roc_curve,
)

from app.training import metrics

# Colour i belongs to models[i] in every chart and in the metrics table.
PALETTE = (
    "#2563eb",
    "#ea580c",
    "#16a34a",
    "#9333ea",
    "#dc2626",
    "#0891b2",
    "#ca8a04",
    "#db2777",
)
_PERFECT = "#111827"
_REFERENCE = "#9ca3af"
# Curves are summaries, never per-customer data, so the page size does not grow with the holdout.
_LORENZ_POINTS = 200
_ROC_POINTS = 101
_RELIABILITY_BINS = 10
_TOP_FEATURES = 15
_CLV_KEYS = ("gini", "spearman", "bias", "rmse", "mae")
_CHURN_KEYS = ("auc", "brier")
#: What `feature_importance` holds unless the caller says otherwise (app.training.fit.importance).
IMPORTANCE_TYPE = "share of XGBoost total gain (importance_type='total_gain'), largest first"
_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,  # model names may contain `$`
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#eef0f3",
    "axes.edgecolor": "#9ca3af",
    "path.simplify": True,
}


@dataclass(frozen=True)
class EvaluatedModel:
    """One model or baseline evaluated on the holdout customers (arrays aligned with the actuals)."""

    name: str
    clv_predicted: np.ndarray
    churn_score: np.ndarray | None = None
    churn_probability: np.ndarray | None = None
    feature_importance: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True)
class _Scored:
    """A model with its arrays validated against the actuals and its metrics (None = n/a)."""

    model: EvaluatedModel
    color: str
    clv: np.ndarray | None
    churn_score: np.ndarray | None
    churn_probability: np.ndarray | None
    values: dict[str, float | None]
    applicable: frozenset[str]  # metric keys the model is meant to have (None there = undefined)


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
    clv_actual = _vector(clv_actual)
    churn_actual = _vector(churn_actual)
    scored = [
        _score(model, PALETTE[i % len(PALETTE)], clv_actual, churn_actual)
        for i, model in enumerate(models)
    ]
    charts = _Charts()
    parts: list[tuple[str, str, str]] = [
        (
            "data",
            "Data and eligibility",
            _facts(summary)
            + _eligibility(manifest)
            + _holdout_facts(clv_actual, churn_actual, currency),
        ),
        (
            "metrics",
            "Holdout metrics (in time)",
            _metrics_table(scored, clv_horizon_days, churn_horizon_days, currency),
        ),
        ("out-of-time", "In time vs out of time", _out_of_time(manifest)),
        ("challengers", "Challengers and baselines", _challengers(manifest)),
        (
            "gain",
            "Cumulative gain (Lorenz curve)",
            _row([charts.lorenz(clv_actual, scored, clv_horizon_days)]),
        ),
        (
            "deciles",
            "Predicted vs actual CLV by decile",
            _row(charts.deciles(clv_actual, scored, clv_horizon_days, currency)),
        ),
        (
            "churn",
            "Churn: reliability and ranking",
            _row(
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
            f'<p class="note">Importance type: {_esc(importance_type)}.</p>'
            + _row(charts.importance(scored)),
        ),
        ("ranges", "Feature training ranges", _ranges(manifest)),
    ]
    nav = " · ".join(f'<a href="#{anchor}">{_esc(label)}</a>' for anchor, label, _ in parts)
    sections = "".join(
        f'<section id="{anchor}"><h2>{_esc(label)}</h2>{content}</section>'
        for anchor, label, content in parts
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><header><h1>{_esc(title)}</h1><nav>{nav}</nav></header>"
        f"{sections}</main></body></html>\n"
    )


def write_report(path: Path, **kwargs: Any) -> None:
    """render_report(**kwargs) written to path (UTF-8)."""
    Path(path).write_text(render_report(**kwargs), encoding="utf-8")


# --- metrics (scikit-learn / scipy; Gini per PROTOCOL.md) ----------------------------------------


def _vector(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def _aligned(values: np.ndarray | None, actual: np.ndarray) -> np.ndarray | None:
    if values is None:
        return None
    vector = _vector(values)
    # A misaligned array cannot be evaluated; showing n/a beats failing the whole training run.
    return vector if len(vector) == len(actual) and len(vector) > 0 else None


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _score(
    model: EvaluatedModel, color: str, clv_actual: np.ndarray, churn_actual: np.ndarray
) -> _Scored:
    clv = _aligned(model.clv_predicted, clv_actual)
    probability = _aligned(model.churn_probability, churn_actual)
    churn_score = _aligned(model.churn_score, churn_actual)
    if churn_score is None:
        churn_score = probability
    values: dict[str, float | None] = dict.fromkeys(_CLV_KEYS + _CHURN_KEYS)
    if clv is not None:
        values.update(clv_values(clv_actual, clv))
    labels = churn_actual > 0.5
    both_classes = 0 < labels.sum() < len(labels)
    if churn_score is not None and both_classes:
        values["auc"] = _finite(float(roc_auc_score(labels, churn_score)))
    if probability is not None:
        values["brier"] = _finite(
            float(brier_score_loss(labels, np.clip(probability, 0.0, 1.0), pos_label=True))
        )
    applicable = set(_CLV_KEYS)
    if model.churn_score is not None or model.churn_probability is not None:
        applicable.add("auc")
    if model.churn_probability is not None:
        applicable.add("brier")
    return _Scored(model, color, clv, churn_score, probability, values, frozenset(applicable))


def clv_values(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """Gini, Spearman, bias, RMSE, MAE; None where undefined (no spread, no revenue)."""
    spread = bool(np.ptp(actual) > 0)
    revenue = bool(actual.sum() > 0)
    varied = bool(np.ptp(predicted) > 0)  # a constant prediction ranks nobody
    out: dict[str, float | None] = {
        "gini": _finite(metrics.normalized_gini(actual, predicted))
        if spread and revenue and varied
        else None,
        "spearman": _finite(float(spearmanr(actual, predicted).statistic))
        if spread and varied
        else None,
        "bias": float(predicted.sum() / actual.sum()) if revenue else None,
        "rmse": float(math.sqrt(mean_squared_error(actual, predicted))),
        "mae": float(mean_absolute_error(actual, predicted)),
    }
    return out


# --- HTML pieces ---------------------------------------------------------------------------------


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fixed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _row(figures: Sequence[str]) -> str:
    return f'<div class="charts">{"".join(figures)}</div>'


def _facts(items: dict[str, str]) -> str:
    facts = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items.items())
    return f'<div class="card"><dl class="facts">{facts}</dl></div>'


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _eligibility(manifest: Any) -> str:
    eligibility = getattr(manifest, "eligibility", None) or {}
    if not eligibility:
        return '<p class="note">Eligibility: not recorded in this manifest.</p>'
    return "<h3>Eligibility</h3>" + _facts({k: _flat(v) for k, v in eligibility.items()})


# (key, header, tooltip, better): better picks the best of the column's values.
_COLUMNS: tuple[tuple[str, str, str, Callable[[list[float]], float]], ...] = (
    ("gini", "Gini ↑", "Normalised Gini (PROTOCOL.md): ranking vs a perfect ranking", max),
    ("spearman", "Spearman ↑", "scipy.stats.spearmanr of predicted vs actual CLV", max),
    (
        "bias",
        "Bias →1",
        "Sum of predicted / sum of actual CLV (1 = no aggregate bias)",
        lambda vs: min(vs, key=lambda v: abs(v - 1.0)),
    ),
    ("rmse", "RMSE ↓", "sklearn mean_squared_error, square root, per customer", min),
    ("mae", "MAE ↓", "sklearn mean_absolute_error per customer", min),
    ("auc", "ROC AUC ↑", "sklearn roc_auc_score of the churn score", max),
    ("brier", "Brier ↓", "sklearn brier_score_loss of the churn probability", min),
)


def _metrics_table(
    scored: list[_Scored], clv_horizon_days: int, churn_horizon_days: int, currency: str
) -> str:
    if not scored:
        return '<p class="na">n/a: no models were evaluated.</p>'
    best: dict[str, float | None] = {}
    for key, _header, _tip, better in _COLUMNS:
        present = [v for s in scored if (v := s.values[key]) is not None]
        # A single value is trivially "best"; highlighting it would say nothing.
        best[key] = better(present) if len(present) >= 2 else None
    head = "".join(
        f'<th title="{_esc(tip)}">{_esc(header)}'
        + (f" ({_esc(currency)})" if key in ("rmse", "mae") else "")
        + "</th>"
        for key, header, tip, _better in _COLUMNS
    )
    rows = []
    for s in scored:
        cells = []
        for key, *_rest in _COLUMNS:
            value = s.values[key]
            text = _money(value) if key in ("rmse", "mae") else _fixed(value)
            is_best = value is not None and best[key] is not None and _same(value, best[key])
            shown = text if key in s.applicable else ""
            cells.append(f'<td class="{"num best" if is_best else "num"}">{shown}</td>')
        note = f'<div class="note">{_esc(s.model.notes)}</div>' if s.model.notes else ""
        rows.append(
            f'<tr><td class="model"><span class="swatch" style="background:{s.color}"></span>'
            f"{_esc(s.model.name)}{note}</td>{''.join(cells)}</tr>"
        )
    return (
        '<div class="card"><table class="metrics"><thead>'
        f'<tr><th></th><th colspan="5" class="group">CLV, next {clv_horizon_days} days</th>'
        f'<th colspan="2" class="group">Churn, no order in {churn_horizon_days} days</th></tr>'
        f"<tr><th>Model</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Best value per column highlighted (bias: closest to 1). '
        "Blank = not applicable to the model; n/a = undefined on this holdout.</p></div>"
    )


def _same(a: float, b: float | None) -> bool:
    return b is not None and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def _holdout_facts(clv_actual: np.ndarray, churn_actual: np.ndarray, currency: str) -> str:
    n_clv, n_churn = len(clv_actual), len(churn_actual)
    parts = [f"{n_clv:,} customers for CLV"]
    if n_clv:
        buyers = float(np.mean(clv_actual > 0))
        parts[0] += (
            f" (actual revenue {_esc(currency)} {clv_actual.sum():,.2f} in total, "
            f"{buyers:.1%} of customers with any)"
        )
    churn = f"{n_churn:,} customers for churn"
    if n_churn:
        churn += f" ({float(churn_actual.mean()):.1%} churned)"
    parts.append(churn)
    return f'<p class="note">Holdout: {"; ".join(parts)}.</p>'


_SIDE_KEYS = ("gini", "spearman", "bias", "auc", "brier")
_NAMES = {
    "model": "Served model",
    "xgboost": "XGBoost",
    "linear": "Ridge + logistic (challenger)",
    "mlp": "MLP (challenger)",
    "spend_rate": "Spend-rate heuristic",
    "bg_nbd_gamma_gamma": "BG/NBD + Gamma-Gamma",
}


def _out_of_time(manifest: Any) -> str:
    if manifest is None:
        return '<p class="na">n/a: no manifest given.</p>'
    in_time: dict[str, dict[str, float]] = manifest.metrics
    later: dict[str, dict[str, float]] = manifest.metrics_out_of_time
    names = list(dict.fromkeys([*in_time, *later]))
    if not names:
        return '<p class="na">n/a: no metrics recorded.</p>'
    origin = manifest.cutoffs["clv"][0] if manifest.cutoffs.get("clv") else None
    head = "".join(f"<th>{k}</th>" for k in _SIDE_KEYS)
    rows = []
    for name in names:
        a, b = in_time.get(name, {}), later.get(name, {})
        cells = "".join(f'<td class="num">{_fixed(a.get(k))}</td>' for k in _SIDE_KEYS)
        cells += "".join(f'<td class="num">{_fixed(b.get(k))}</td>' for k in _SIDE_KEYS)
        rows.append(f'<tr><td class="model">{_esc(_NAMES.get(name, name))}</td>{cells}</tr>')
    validation = manifest.validation or {}
    where = f"latest cutoff {origin:%Y-%m-%d}; " if origin else ""
    return (
        '<div class="card"><table class="metrics side"><thead><tr><th></th>'
        f'<th colspan="{len(_SIDE_KEYS)}" class="group">in time (final model)</th>'
        f'<th colspan="{len(_SIDE_KEYS)}" class="group">out of time (fold model)</th></tr>'
        f"<tr><th>Model</th>{head}{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">Origin: {where}out-of-time gap '
        f"{validation.get('clv_gap_days', 'n/a')} days (CLV) / "
        f"{validation.get('churn_gap_days', 'n/a')} days (churn). Every origin of a rolling "
        "backtest: <code>clv backtest --challengers --html</code>.</p></div>"
    )


def _challengers(manifest: Any) -> str:
    training = getattr(manifest, "training", None) or {}
    block = training.get("challengers")
    families = training.get("families", {"clv": "xgboost", "churn": "xgboost"})
    served = f"<p>Serving: CLV by <strong>{_esc(families.get('clv'))}</strong>, churn by <strong>{_esc(families.get('churn'))}</strong>.</p>"
    if not block:
        return served + (
            '<p class="note">No challengers trained for this artifact (<code>clv train '
            "--challengers</code> trains ridge + logistic regression and an MLP and serves, per "
            "target, the best out of time). Baselines are in the tables above.</p>"
        )
    rows = []
    for family, info in block.items():
        parity = info.get("parity", {})
        rows.append(
            f'<tr><td class="model">{_esc(_NAMES.get(family, family))}</td>'
            f"<td>{_esc(_flat(info.get('models', {})))}</td>"
            f"<td>{'passed' if parity.get('passed') else 'FAILED'} (CLV rel "
            f"{parity.get('clv_max_rel_diff', 0.0):.1e}, churn abs "
            f"{parity.get('churn_max_abs_diff', 0.0):.1e})</td></tr>"
        )
    return served + (
        '<div class="card"><table class="metrics"><thead><tr><th>Family</th><th>Models</th>'
        f"<th>ONNX parity</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Out-of-time metrics of each challenger are in the table above; the '
        "champion per target has the best out-of-time Gini (CLV) / AUC (churn).</p></div>"
    )


def _coverage(manifest: Any, charts: _Charts) -> str:
    intervals = getattr(manifest, "clv_intervals", None) or {}
    coverage = intervals.get("coverage_80")
    if coverage is None:
        method = intervals.get("method")
        return (
            '<p class="na">Interval coverage: not available in this manifest'
            + (f" (intervals: {_esc(method)})" if method else "")
            + ".</p>"
        )
    text = f"<p>80 % interval coverage on the holdout: <strong>{coverage:.1%}</strong> (target 80 % ± 5 points).</p>"
    by_decile = intervals.get("coverage_by_decile")
    if by_decile:
        text += _row([charts.coverage([float(v) for v in by_decile])])
    return text


def _ranges(manifest: Any) -> str:
    ranges = getattr(manifest, "feature_ranges", None) or {}
    if not ranges:
        return '<p class="na">n/a: no training ranges recorded.</p>'
    rows = "".join(
        f'<tr><td class="model">{_esc(name)}</td><td class="num">{lo:,.2f}</td>'
        f'<td class="num">{hi:,.2f}</td></tr>'
        for name, (lo, hi) in ranges.items()
    )
    return (
        '<div class="card"><table class="metrics"><thead><tr><th>Feature</th><th>min</th>'
        f"<th>max</th></tr></thead><tbody>{rows}</tbody></table>"
        '<p class="note">Over the rows the final models were fitted on; the API flags inputs '
        "outside them.</p></div>"
    )


# --- figures (matplotlib, inline SVG) ------------------------------------------------------------


class _Charts:
    """Builds the figures of one page; each gets its own hash salt so ids never collide."""

    def __init__(self) -> None:
        self.count = 0

    def _svg(self, build: Callable[[Figure], None], size: tuple[float, float]) -> str:
        self.count += 1
        settings: Any = {**_RC, "svg.hashsalt": f"clv-report-{self.count}"}
        with matplotlib.rc_context(settings):
            figure = Figure(figsize=size, layout="constrained")
            build(figure)
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        svg = buffer.getvalue()
        svg = re.sub(r"<metadata>.*?</metadata>", "", svg[svg.index("<svg") :], flags=re.S)
        # matplotlib numbers its groups per figure (figure_1, axes_1...): prefix every id and
        # in-page reference so the page's inline SVGs never share an id.
        prefix = f"f{self.count}-"
        svg = re.sub(r'\bid="', f'id="{prefix}', svg)
        svg = svg.replace("url(#", f"url(#{prefix}").replace('href="#', f'href="#{prefix}')
        return svg

    def figure(
        self, build: Callable[[Figure], None], caption: str, size: tuple[float, float] = (5.6, 3.6)
    ) -> str:
        return (
            f'<figure style="width:{size[0] * 100:.0f}px">{self._svg(build, size)}'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )

    def placeholder(self, title: str, message: str, caption: str) -> str:
        def build(figure: Figure) -> None:
            ax = figure.add_subplot()
            ax.set_axis_off()
            ax.set_title(title)
            ax.text(0.5, 0.5, message, ha="center", va="center", color="#6b7280")

        return self.figure(build, caption, (4.6, 2.4))

    def lorenz(self, actual: np.ndarray, scored: list[_Scored], horizon_days: int) -> str:
        title = f"Cumulative gain: revenue in the next {horizon_days} days"
        caption = (
            "Customers ranked by each model's predicted CLV (x); the share of actual holdout "
            "revenue the top-ranked ones bought (y). Closer to the perfect ranking is better."
        )
        usable = [s for s in scored if s.clv is not None]
        if not usable or not actual.sum() > 0:
            reason = "no model with CLV predictions" if not usable else "no actual revenue"
            return self.placeholder(title, f"n/a: {reason}", caption)

        def build(figure: Figure) -> None:
            ax = figure.add_subplot()
            ax.plot([0, 1], [0, 1], color=_REFERENCE, linestyle="--", label="Random ranking")
            perfect = np.array(metrics.lorenz_curve(actual, actual, _LORENZ_POINTS))
            ax.plot(
                perfect[:, 0],
                perfect[:, 1],
                color=_PERFECT,
                linestyle=":",
                label=f"Perfect ranking: Gini {_fixed(_perfect_gini(actual))}",
            )
            for s in usable:
                assert s.clv is not None
                label = f"{s.model.name}: Gini {_fixed(s.values['gini'])}"
                if np.ptp(s.clv) > 0:
                    curve = np.array(metrics.lorenz_curve(actual, s.clv, _LORENZ_POINTS))
                    ax.plot(curve[:, 0], curve[:, 1], color=s.color, label=label)
                else:  # a constant prediction ranks nobody: named, not drawn
                    ax.plot([], [], color=s.color, label=label + " (constant prediction)")
            ax.set_title(title)
            ax.set_xlabel("share of customers, highest predicted CLV first")
            ax.set_ylabel("share of actual revenue")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.legend(loc="lower right", fontsize=7.5)

        return self.figure(build, caption)

    def deciles(
        self, actual: np.ndarray, scored: list[_Scored], horizon_days: int, currency: str
    ) -> list[str]:
        usable = [s for s in scored if s.clv is not None and len(s.clv) >= 1]
        caption_tail = (
            f"mean predicted vs mean actual CLV ({currency}, next {horizon_days} days) per decile "
            "of the model's prediction (1 = highest); each model on its own scale."
        )
        if not usable:
            return [self.placeholder("Deciles", "n/a: no model with CLV predictions", caption_tail)]
        out = []
        for s in usable:
            assert s.clv is not None
            rows = metrics.deciles(actual, s.clv)

            def build(figure: Figure, s: _Scored = s, rows: list[Any] = rows) -> None:
                ax = figure.add_subplot()
                x = np.array([d.decile for d in rows], dtype=float)
                predicted = np.nan_to_num([d.mean_predicted for d in rows])
                observed = np.nan_to_num([d.mean_actual for d in rows])
                ax.bar(x - 0.2, predicted, width=0.4, color=s.color, label="predicted")
                ax.bar(x + 0.2, observed, width=0.4, color=_REFERENCE, label="actual")
                ax.set_xticks(range(1, 11))
                ax.set_title(s.model.name[:60])
                ax.set_xlabel("decile of predicted CLV (1 = highest)")
                ax.set_ylabel(f"mean CLV ({currency})")
                ax.legend(fontsize=7.5)

            out.append(self.figure(build, f"{s.model.name}: {caption_tail}", (3.8, 2.9)))
        return out

    def reliability(self, labels: np.ndarray, scored: list[_Scored], horizon_days: int) -> str:
        title = f"Churn reliability (no order in {horizon_days} days)"
        caption = (
            "sklearn calibration_curve, 10 quantile bins: mean predicted probability (x) vs "
            "observed churn rate (y); the number beside each point is its customers."
        )
        usable = [s for s in scored if s.churn_probability is not None]
        if not usable:
            return self.placeholder(title, "n/a: no model provides a churn probability", caption)
        if len(labels) < 2 or not 0 < labels.sum() < len(labels):
            return self.placeholder(title, _one_class(labels), caption)

        def build(figure: Figure) -> None:
            ax = figure.add_subplot()
            ax.plot([0, 1], [0, 1], color=_REFERENCE, linestyle="--", label="perfectly calibrated")
            for s in usable:
                assert s.churn_probability is not None
                p = np.clip(s.churn_probability, 0.0, 1.0)
                observed, predicted = calibration_curve(
                    labels > 0.5, p, n_bins=_RELIABILITY_BINS, strategy="quantile"
                )
                # The customers per bin, binned as calibration_curve(strategy="quantile") does.
                edges = np.percentile(p, np.linspace(0, 100, _RELIABILITY_BINS + 1))
                totals = np.bincount(np.searchsorted(edges[1:-1], p), minlength=len(edges))
                counts = totals[totals > 0]
                ax.plot(predicted, observed, marker="o", color=s.color, label=s.model.name[:50])
                for x, y, n in zip(predicted, observed, counts, strict=False):
                    ax.annotate(
                        f"{n:,}", (x, y), fontsize=6.5, xytext=(3, -8), textcoords="offset points"
                    )
            ax.set_title(title)
            ax.set_xlabel("mean predicted probability")
            ax.set_ylabel("observed churn rate")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.legend(loc="upper left", fontsize=7.5)

        return self.figure(build, caption)

    def roc(self, labels: np.ndarray, scored: list[_Scored], horizon_days: int) -> str:
        title = f"Churn ROC (no order in {horizon_days} days)"
        caption = "sklearn roc_curve of each churn score; AUC from roc_auc_score."
        usable = [s for s in scored if s.churn_score is not None]
        if not usable:
            return self.placeholder(title, "n/a: no model provides a churn score", caption)
        if len(labels) < 2 or not 0 < labels.sum() < len(labels):
            return self.placeholder(title, _one_class(labels), caption)

        def build(figure: Figure) -> None:
            ax = figure.add_subplot()
            ax.plot([0, 1], [0, 1], color=_REFERENCE, linestyle="--", label="random")
            grid = np.linspace(0, 1, _ROC_POINTS)
            for s in usable:
                assert s.churn_score is not None
                fpr, tpr, _ = roc_curve(labels > 0.5, s.churn_score)
                ax.plot(
                    grid,
                    np.interp(grid, fpr, tpr),
                    color=s.color,
                    label=f"{s.model.name[:50]}: AUC {_fixed(s.values['auc'])}",
                )
            ax.set_title(title)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(loc="lower right", fontsize=7.5)

        return self.figure(build, caption)

    def importance(self, scored: list[_Scored]) -> list[str]:
        first = next((s for s in scored if s.model.feature_importance), None)
        if first is None:
            return [self.placeholder("Feature importance", "n/a: no importances", "")]
        out = []
        for target, items in first.model.feature_importance.items():
            top = items[:_TOP_FEATURES]

            def build(
                figure: Figure, top: list[tuple[str, float]] = top, target: str = target
            ) -> None:
                ax = figure.add_subplot()
                names = [n for n, _ in top]
                values = [max(float(v), 0.0) for _, v in top]
                ax.barh(names, values, color=first.color)
                ax.invert_yaxis()  # the most important on top
                ax.set_title(f"{target}: {first.model.name[:50]}")
                ax.set_xlabel("share of importance")
                ax.grid(axis="y", visible=False)

            out.append(
                self.figure(
                    build,
                    f"{target}: top {len(top)} features",
                    (4.6, 0.5 + 0.22 * max(len(top), 3)),
                )
            )
        return out

    def coverage(self, by_decile: list[float]) -> str:
        def build(figure: Figure) -> None:
            ax = figure.add_subplot()
            x = np.arange(1, len(by_decile) + 1)
            ax.bar(x, np.nan_to_num(by_decile), color=PALETTE[0])
            ax.axhspan(0.75, 0.85, color="#dcfce7", zorder=0, label="80 % ± 5 points")
            ax.set_ylim(0, 1)
            ax.set_xticks(x)
            ax.set_xlabel("decile of predicted CLV (1 = highest)")
            ax.set_ylabel("share inside [p10, p90]")
            ax.legend(fontsize=7.5)

        return self.figure(build, "Holdout coverage of the 80 % CLV interval by decile.")


def _perfect_gini(actual: np.ndarray) -> float | None:
    if len(actual) == 0 or not actual.sum() > 0 or not np.ptp(actual) > 0:
        return None
    return _finite(metrics.normalized_gini(actual, actual))


def _one_class(labels: np.ndarray) -> str:
    if len(labels) and labels.sum() == 0:
        return "n/a: no holdout customer churned"
    if len(labels) and labels.sum() == len(labels):
        return "n/a: every holdout customer churned"
    return "n/a: too few holdout customers"


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
