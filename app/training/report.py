"""Self-contained HTML training report: metrics table and inline-SVG charts, no JavaScript."""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
_ACTUAL_BAR = "#9ca3af"

_WIDTH, _HEIGHT = 560, 360
_PANEL_WIDTH, _PANEL_HEIGHT = 360, 270
# Curves are summaries, never per-customer data, so the page size does not grow with the holdout.
_LORENZ_POINTS = 200
_ROC_POINTS = 101
_RELIABILITY_BINS = 10
_TOP_FEATURES = 15
_CHAR_WIDTH = 6.9  # rough width of one 11-12 px system-font character, for layout only

_CLV_KEYS = ("gini", "spearman", "bias", "rmse", "mae")
_CHURN_KEYS = ("auc", "brier")


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
) -> str:
    """The whole self-contained HTML page."""
    clv_actual = _vector(clv_actual)
    churn_actual = _vector(churn_actual)
    scored = [
        _score(model, PALETTE[i % len(PALETTE)], clv_actual, churn_actual)
        for i, model in enumerate(models)
    ]
    sections = [
        _section(
            "metrics",
            "Holdout metrics",
            _metrics_table(scored, clv_horizon_days, churn_horizon_days, currency)
            + _holdout_facts(clv_actual, churn_actual, currency),
        ),
        _section(
            "gain",
            "Cumulative gain (Lorenz curve)",
            _charts([_lorenz_figure(clv_actual, scored, clv_horizon_days)]),
        ),
        _section(
            "deciles",
            "Predicted vs actual CLV by decile",
            _charts(_decile_figures(clv_actual, scored, clv_horizon_days, currency)),
        ),
        _section(
            "churn",
            "Churn: calibration and ranking",
            _charts(
                [
                    _reliability_figure(churn_actual, scored, churn_horizon_days),
                    _roc_figure(churn_actual, scored, churn_horizon_days),
                ]
            ),
        ),
        _section("importance", "Feature importance", _charts(_importance_figures(scored))),
    ]
    nav = " · ".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label in (
            ("metrics", "Metrics"),
            ("gain", "Cumulative gain"),
            ("deciles", "Deciles"),
            ("churn", "Churn"),
            ("importance", "Feature importance"),
        )
    )
    facts = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in summary.items())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><header><h1>{_esc(title)}</h1><nav>{nav}</nav></header>"
        f'<div class="card"><dl class="facts">{facts}</dl></div>'
        + "".join(sections)
        + "</main></body></html>\n"
    )


def write_report(path: Path, **kwargs: Any) -> None:
    """render_report(**kwargs) written to path (UTF-8)."""
    Path(path).write_text(render_report(**kwargs), encoding="utf-8")


# --- metrics -------------------------------------------------------------------------------------


def _vector(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def _aligned(values: np.ndarray | None, actual: np.ndarray) -> np.ndarray | None:
    if values is None:
        return None
    vector = _vector(values)
    # A misaligned array cannot be evaluated; showing n/a beats failing the whole training run.
    return vector if len(vector) == len(actual) and len(vector) > 0 else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
        values.update(_clv_values(clv_actual, clv))
    if churn_score is not None:
        with np.errstate(all="ignore"):
            churn = metrics.churn_metrics(churn_actual, churn_score, probability)
        both_classes = 0 < churn_actual.sum() < len(churn_actual)
        values["auc"] = _finite(churn["auc"]) if both_classes else None
        values["brier"] = _finite(churn.get("brier"))
    applicable = set(_CLV_KEYS)
    if model.churn_score is not None or model.churn_probability is not None:
        applicable.add("auc")
    if model.churn_probability is not None:
        applicable.add("brier")
    return _Scored(model, color, clv, churn_score, probability, values, frozenset(applicable))


def _clv_values(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    with np.errstate(all="ignore"):
        try:
            raw = metrics.clv_metrics(actual, predicted)
        except ZeroDivisionError:
            # Constant actuals make the perfect-ranking Gini exactly 0 (metrics divides by it);
            # the error metrics stay well defined, so compute them as metrics.clv_metrics does.
            raw = {
                "bias": float(predicted.sum() / max(actual.sum(), 1e-12)),
                "rmse": float(np.sqrt(np.mean((predicted - actual) ** 2))),
                "mae": float(np.mean(np.abs(predicted - actual))),
            }
    spread = bool(np.ptp(actual) > 0)
    revenue = bool(actual.sum() > 0)
    defined = {
        # A constant prediction has no ranking (stable sorting would keep the input order).
        "gini": spread and revenue and bool(np.ptp(predicted) > 0),
        "spearman": spread and bool(np.ptp(predicted) > 0),
        "bias": revenue,
        "rmse": True,
        "mae": True,
    }
    return {k: _finite(raw.get(k)) if defined[k] else None for k in _CLV_KEYS}


def _gini_of_perfect(actual: np.ndarray) -> float | None:
    if len(actual) == 0 or not actual.sum() > 0 or not np.ptp(actual) > 0:
        return None
    with np.errstate(all="ignore"):
        return _finite(metrics.normalized_gini(actual, actual))


# --- HTML pieces ---------------------------------------------------------------------------------


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fixed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _truncate(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _section(anchor: str, heading: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(heading)}</h2>{content}</section>'


def _charts(figures: Sequence[str]) -> str:
    return f'<div class="charts">{"".join(figures)}</div>'


def _figure(svg: str, width: float, caption: str) -> str:
    return f'<figure style="width:{width:.0f}px">{svg}<figcaption>{_esc(caption)}</figcaption></figure>'


# (key, header, tooltip, better): better picks the best of the column's values.
_COLUMNS: tuple[tuple[str, str, str, Callable[[list[float]], float]], ...] = (
    ("gini", "Gini ↑", "Normalised Gini: revenue ranking vs a perfect ranking (1 = perfect)", max),
    ("spearman", "Spearman ↑", "Rank correlation of predicted vs actual CLV", max),
    (
        "bias",
        "Bias →1",
        "Sum of predicted / sum of actual CLV (1 = no aggregate bias)",
        lambda vs: min(vs, key=lambda v: abs(v - 1.0)),
    ),
    ("rmse", "RMSE ↓", "Root mean squared error per customer", min),
    ("mae", "MAE ↓", "Mean absolute error per customer", min),
    ("auc", "ROC AUC ↑", "Churn ranking: P(churner scored above a retained customer)", max),
    ("brier", "Brier ↓", "Mean squared error of the churn probability", min),
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
            cls = "num best" if is_best else "num"
            shown = text if key in s.applicable else ""
            cells.append(f'<td class="{cls}">{shown}</td>')
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


# --- SVG primitives ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """Maps data coordinates into the plot area of one SVG."""

    width: float
    height: float
    x_domain: tuple[float, float]
    y_domain: tuple[float, float]
    left: float = 60
    right: float = 20
    top: float = 40
    bottom: float = 50

    def x(self, value: float) -> float:
        lo, hi = self.x_domain
        return self.left + (value - lo) / (hi - lo) * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        lo, hi = self.y_domain
        span = self.height - self.top - self.bottom
        return self.height - self.bottom - (value - lo) / (hi - lo) * span

    @property
    def x_range(self) -> tuple[float, float]:
        return self.left, self.width - self.right

    @property
    def y_range(self) -> tuple[float, float]:
        return self.top, self.height - self.bottom


def _n(value: float) -> str:
    return f"{value:.1f}"


def _svg(width: float, height: float, label: str, body: Sequence[str]) -> str:
    return (
        f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'role="img" aria-label="{_esc(label)}">{"".join(body)}</svg>'
    )


def _text(
    x: float, y: float, text: str, *, anchor: str = "start", cls: str = "", extra: str = ""
) -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{klass}{extra}>{_esc(text)}</text>'


def _title(width: float, text: str) -> str:
    return _text(12, 22, _truncate(text, int((width - 24) / 7.2)), cls="title")


def _line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" class="{cls}"/>'


def _polyline(
    frame: _Frame,
    points: Sequence[tuple[float, float]],
    color: str,
    *,
    width: float = 2.0,
    dash: str = "",
    tooltip: str = "",
) -> str:
    coords = " ".join(f"{_n(frame.x(x))},{_n(frame.y(y))}" for x, y in points)
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    tip = f"<title>{_esc(tooltip)}</title>" if tooltip else ""
    return (
        f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{width}"'
        f' stroke-linejoin="round"{dashed}>{tip}</polyline>'
    )


def _nice_scale(lo: float, hi: float, target: int = 5) -> tuple[float, float, list[float]]:
    """Domain widened to round numbers, and its ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    ticks = [start + i * step for i in range(round((stop - start) / step) + 1)]
    return start, stop, ticks


def _compact(value: float) -> str:
    """Short tick label: 1.5k, 2M, 0.25."""
    value = round(value, 9)
    size = abs(value)
    if size >= 1e9:
        return f"{value / 1e9:.3g}B"
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _axes(
    frame: _Frame,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    x_format: Callable[[float], str],
    y_format: Callable[[float], str],
    x_label: str,
    y_label: str,
    *,
    x_grid: bool = True,
) -> list[str]:
    (x0, x1), (y0, y1) = frame.x_range, frame.y_range
    out = []
    for tick in y_ticks:
        y = frame.y(tick)
        out.append(_line(x0, y, x1, y, "grid"))
        out.append(_text(x0 - 6, y + 4, y_format(tick), anchor="end"))
    for tick in x_ticks:
        x = frame.x(tick)
        if x_grid:
            out.append(_line(x, y0, x, y1, "grid"))
        out.append(_text(x, y1 + 16, x_format(tick), anchor="middle"))
    out.append(_line(x0, y1, x1, y1, "axis"))
    out.append(_line(x0, y0, x0, y1, "axis"))
    if x_label:
        out.append(_text((x0 + x1) / 2, y1 + 36, x_label, anchor="middle", cls="label"))
    if y_label:
        cy = (y0 + y1) / 2
        out.append(
            _text(
                16,
                cy,
                y_label,
                anchor="middle",
                cls="label",
                extra=f' transform="rotate(-90 16 {_n(cy)})"',
            )
        )
    return out


def _legend(
    frame: _Frame,
    entries: Sequence[tuple[str, str, str]],
    curves: Sequence[Sequence[tuple[float, float]]],
    corners: Sequence[str] = ("br", "tl", "tr", "bl"),
    *,
    max_chars: int = 44,
) -> list[str]:
    """Boxed legend of (label, colour, dash) in the corner of the plot hiding the least data."""
    if not entries:
        return []
    labels = [_truncate(label, max_chars) for label, _c, _d in entries]
    width = 36 + max(len(label) for label in labels) * _CHAR_WIDTH
    height = 8 + 18 * len(entries)
    (x0, x1), (y0, y1) = frame.x_range, frame.y_range
    pixels = [(frame.x(x), frame.y(y)) for curve in curves for x, y in _densify(curve)]

    def box(corner: str) -> tuple[float, float]:
        left = x0 + 8 if corner[1] == "l" else x1 - 8 - width
        top = y0 + 8 if corner[0] == "t" else y1 - 8 - height
        return left, top

    def hidden(corner: str) -> int:
        left, top = box(corner)
        pad = 12  # markers and line widths reach beyond the data point itself
        return sum(
            left - pad <= px <= left + width + pad and top - pad <= py <= top + height + pad
            for px, py in pixels
        )

    # min() keeps the first of equally good corners, so the order states the preference.
    left, top = box(min(corners, key=hidden))
    out = [
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(width)}" height="{_n(height)}" '
        'rx="4" class="legend"/>'
    ]
    for i, ((full, color, dash), label) in enumerate(zip(entries, labels, strict=True)):
        y = top + 13 + 18 * i
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{_n(left + 8)}" y1="{_n(y)}" x2="{_n(left + 28)}" y2="{_n(y)}" '
            f'stroke="{color}" stroke-width="2.5"{dashed}/>'
        )
        tip = f"<title>{_esc(full)}</title>" if label != full else ""
        out.append(f'<text x="{_n(left + 34)}" y="{_n(y + 4)}">{_esc(label)}{tip}</text>')
    return out


def _densify(curve: Sequence[tuple[float, float]], steps: int = 4) -> list[tuple[float, float]]:
    """Points along each segment too, so a long straight segment still counts as covered."""
    out = list(curve[:1])
    for (ax, ay), (bx, by) in itertools.pairwise(curve):
        out += [
            (ax + (bx - ax) * k / steps, ay + (by - ay) * k / steps) for k in range(1, steps + 1)
        ]
    return out


def _placeholder(width: float, height: float, title: str, message: str) -> str:
    return _svg(
        width,
        height,
        f"{title}: {message}",
        [
            _title(width, title),
            f'<rect x="12" y="36" width="{width - 24:.0f}" height="{height - 48:.0f}" '
            'rx="6" class="empty"/>',
            _text(width / 2, height / 2 + 4, message, anchor="middle", cls="na"),
        ],
    )


# --- charts --------------------------------------------------------------------------------------


def _lorenz_figure(actual: np.ndarray, scored: list[_Scored], horizon_days: int) -> str:
    title = f"Cumulative gain: revenue in the next {horizon_days} days"
    caption = (
        "Customers are ranked by each model's predicted CLV (x) and the curve shows the share of "
        "actual holdout revenue the top-ranked ones captured (y): the closer to the perfect "
        "ranking and the further above the diagonal, the better."
    )
    usable = [s for s in scored if s.clv is not None]
    if not usable or not actual.sum() > 0:
        reason = "no model with CLV predictions" if not usable else "no actual revenue in holdout"
        return _figure(_placeholder(_WIDTH, _HEIGHT, title, f"n/a: {reason}"), _WIDTH, caption)
    frame = _Frame(_WIDTH, _HEIGHT, (0.0, 1.0), (0.0, 1.0))
    ticks = [i / 5 for i in range(6)]
    body = [_title(_WIDTH, title)]
    body += _axes(
        frame,
        ticks,
        ticks,
        _percent,
        _percent,
        "share of customers, ranked by predicted CLV (highest first)",
        "share of actual revenue captured",
    )
    body.append(_polyline(frame, [(0, 0), (1, 1)], _REFERENCE, width=1.5, dash="4 4"))
    perfect = metrics.lorenz_curve(actual, actual, _LORENZ_POINTS)
    body.append(
        _polyline(
            frame, perfect, _PERFECT, width=1.5, dash="6 3", tooltip="Perfect ranking (by actual)"
        )
    )
    curves = [perfect]
    entries: list[tuple[str, str, str]] = []
    # Drawn last-to-first so the trained model (first) ends up on top.
    for s in reversed(usable):
        assert s.clv is not None
        label = f"{s.model.name}: Gini {_fixed(s.values['gini'])}"
        if np.ptp(s.clv) > 0:
            curve = metrics.lorenz_curve(actual, s.clv, _LORENZ_POINTS)
            curves.append(curve)
            body.append(_polyline(frame, curve, s.color, tooltip=s.model.name))
        else:
            # A constant prediction ranks nobody; its "curve" would just replay the input order.
            label += " (constant prediction)"
        entries.insert(0, (label, s.color, ""))
    entries.append((f"Perfect ranking: Gini {_fixed(_gini_of_perfect(actual))}", _PERFECT, "6 3"))
    entries.append(("Random ranking", _REFERENCE, "4 4"))
    body += _legend(frame, entries, curves)
    return _figure(_svg(_WIDTH, _HEIGHT, title, body), _WIDTH, caption)


def _decile_figures(
    actual: np.ndarray, scored: list[_Scored], horizon_days: int, currency: str
) -> list[str]:
    caption_tail = (
        f"customers split into ten equal groups by predicted CLV (1 = highest); coloured bars are "
        f"the mean prediction, grey bars the mean actual {horizon_days}-day revenue, on a shared "
        "scale: matching bars mean a well calibrated model, falling grey bars a good ranking."
    )
    usable = [s for s in scored if s.clv is not None]
    if not usable:
        title = "Predicted vs actual by decile"
        return [
            _figure(
                _placeholder(_WIDTH, _HEIGHT, title, "n/a: no model with CLV predictions"),
                _WIDTH,
                caption_tail[0].upper() + caption_tail[1:],
            )
        ]
    tables = []
    for s in usable:
        assert s.clv is not None
        with np.errstate(all="ignore"):
            tables.append(metrics.deciles(actual, s.clv))
    means = [v for table in tables for d in table for v in (d.mean_predicted, d.mean_actual)]
    finite = [v for v in means if math.isfinite(v)] or [0.0]
    # One y scale for all panels so that heights can be compared across models.
    lo, hi, ticks = _nice_scale(min(0.0, *finite), max(0.0, *finite), 4)
    figures = []
    for s, table in zip(usable, tables, strict=True):
        svg = _decile_panel(s, table, (lo, hi), ticks, currency)
        caption = f"{s.model.name}: {caption_tail}"
        figures.append(_figure(svg, _PANEL_WIDTH, caption))
    return figures


def _decile_panel(
    s: _Scored,
    table: list[metrics.Decile],
    domain: tuple[float, float],
    ticks: list[float],
    currency: str,
) -> str:
    w, h = _PANEL_WIDTH, _PANEL_HEIGHT
    frame = _Frame(w, h, (0.5, 10.5), domain, left=56, right=10, top=36, bottom=46)
    body = [_title(w, s.model.name)]
    body += _axes(
        frame,
        [d.decile for d in table],
        ticks,
        lambda v: f"{v:.0f}",
        _compact,
        "decile of predicted CLV (1 = highest)",
        f"mean CLV ({currency})",
        x_grid=False,
    )
    slot = frame.x(1.5) - frame.x(0.5)
    bar = slot * 0.38
    zero = frame.y(max(domain[0], min(0.0, domain[1])))
    for d in table:
        center = frame.x(d.decile)
        tip = (
            f"decile {d.decile}: {d.customers:,} customers, mean predicted {d.mean_predicted:,.2f}, "
            f"mean actual {d.mean_actual:,.2f} {currency}, {d.share_of_actual:.1%} of revenue"
        )
        for x, value, color in (
            (center - bar - 0.5, d.mean_predicted, s.color),
            (center + 0.5, d.mean_actual, _ACTUAL_BAR),
        ):
            y = frame.y(value) if math.isfinite(value) else zero
            body.append(
                f'<rect x="{_n(x)}" y="{_n(min(y, zero))}" width="{_n(bar)}" '
                f'height="{_n(abs(zero - y))}" fill="{color}"><title>{_esc(tip)}</title></rect>'
            )
    (_x0, x1), (y0, _y1) = frame.x_range, frame.y_range
    for i, (label, color) in enumerate((("predicted", s.color), ("actual", _ACTUAL_BAR))):
        y = y0 + 4 + 15 * i
        body.append(f'<rect x="{_n(x1 - 74)}" y="{_n(y)}" width="10" height="10" fill="{color}"/>')
        body.append(_text(x1 - 60, y + 9, label))
    return _svg(w, h, f"Predicted vs actual CLV by decile: {s.model.name}", body)


def _reliability_figure(labels: np.ndarray, scored: list[_Scored], horizon_days: int) -> str:
    title = f"Churn calibration: no order within {horizon_days} days"
    caption = (
        "Each point is a probability bin: mean predicted churn probability (x) vs the share of "
        "those customers who actually churned (y); on the diagonal = well calibrated, above it = "
        "risk under-predicted, and marker area and the bars below show how many customers "
        "fall in each bin."
    )
    usable = [s for s in scored if s.churn_probability is not None]
    height = 440
    if not usable:
        message = "n/a: no model provides a churn probability"
        return _figure(_placeholder(_WIDTH, height, title, message), _WIDTH, caption)
    bins: list[list[metrics.ReliabilityBin]] = []
    for s in usable:
        assert s.churn_probability is not None
        # Probabilities slightly outside [0, 1] would fall into no bin's range on the axes.
        clipped = np.clip(s.churn_probability, 0.0, 1.0)
        bins.append(metrics.reliability(labels, clipped, _RELIABILITY_BINS))
    main = _Frame(_WIDTH, height, (0.0, 1.0), (0.0, 1.0), top=40, bottom=150)
    ticks = [i / 5 for i in range(6)]
    body = [_title(_WIDTH, title)]
    body += _axes(main, [], ticks, _fixed, lambda v: f"{v:.1f}", "", "observed churn rate")
    for tick in ticks:
        x = main.x(tick)
        body.append(_line(x, main.y_range[0], x, main.y_range[1], "grid"))
    body.append(_polyline(main, [(0, 0), (1, 1)], _REFERENCE, width=1.5, dash="4 4"))
    base_rate = float(labels.mean())
    label_offset = -0.04 if base_rate > 0.9 else 0.04
    body.append(_polyline(main, [(0, base_rate), (1, base_rate)], _REFERENCE, width=1, dash="1 3"))
    body.append(
        _text(
            main.x_range[1] - 4,
            # Below the line when above it would run into the chart title.
            main.y(base_rate) + (14 if base_rate > 0.9 else -4),
            f"overall {base_rate:.1%}",
            anchor="end",
            cls="halo",
        )
    )
    largest = max((b.customers for table in bins for b in table), default=1)
    # The base-rate line and its label at the right end are data the legend must not hide.
    curves = [
        [(0.0, base_rate), (1.0, base_rate)],
        [(0.8, base_rate + label_offset), (1.0, base_rate + label_offset)],
    ]
    for s, table in reversed(list(zip(usable, bins, strict=True))):
        points = [(b.mean_predicted, b.observed) for b in table]
        curves.append(points)
        body.append(_polyline(main, points, s.color, tooltip=s.model.name))
        for b in table:
            radius = 2.5 + 7.5 * math.sqrt(b.customers / largest)
            tip = (
                f"{s.model.name}: p in [{b.low:.1f}, {b.high:.1f}), {b.customers:,} customers, "
                f"mean predicted {b.mean_predicted:.3f}, observed {b.observed:.3f}"
            )
            body.append(
                f'<circle cx="{_n(main.x(b.mean_predicted))}" cy="{_n(main.y(b.observed))}" '
                f'r="{radius:.1f}" fill="{s.color}" fill-opacity="0.3" stroke="{s.color}">'
                f"<title>{_esc(tip)}</title></circle>"
            )
    entries = [(f"{s.model.name}: Brier {_fixed(s.values['brier'])}", s.color, "") for s in usable]
    entries.append(("Perfect calibration", _REFERENCE, "4 4"))
    body += _legend(main, entries, curves, ("tl", "br", "tr", "bl"))
    body += _bin_histogram(usable, bins, labels_count=len(labels), height=height)
    return _figure(_svg(_WIDTH, height, title, body), _WIDTH, caption)


def _bin_histogram(
    usable: list[_Scored],
    bins: list[list[metrics.ReliabilityBin]],
    *,
    labels_count: int,
    height: float,
) -> list[str]:
    """Share of customers per probability bin, one bar per model, under the calibration plot."""
    shares = [b.customers / max(labels_count, 1) for table in bins for b in table]
    top = max(shares, default=1.0) or 1.0
    frame = _Frame(_WIDTH, height, (0.0, 1.0), (0.0, top), top=height - 118, bottom=50)
    ticks = [i / 5 for i in range(6)]
    body = _axes(
        frame,
        ticks,
        [0.0, top],
        lambda v: f"{v:.1f}",
        _percent,
        "predicted churn probability",
        "",
        x_grid=False,
    )
    body.append(_text(frame.x_range[0] + 4, frame.y_range[0] - 4, "customers per bin", cls="label"))
    bin_width = (frame.x(1.0) - frame.x(0.0)) / _RELIABILITY_BINS
    bar = bin_width * 0.8 / len(usable)
    for i, (s, table) in enumerate(zip(usable, bins, strict=True)):
        for b in table:
            share = b.customers / max(labels_count, 1)
            x = frame.x(b.low) + bin_width * 0.1 + i * bar
            y = frame.y(share)
            tip = f"{s.model.name}: {b.customers:,} customers ({share:.1%}) in [{b.low:.1f}, {b.high:.1f})"
            body.append(
                f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(bar)}" '
                f'height="{_n(frame.y(0.0) - y)}" fill="{s.color}" fill-opacity="0.75">'
                f"<title>{_esc(tip)}</title></rect>"
            )
    return body


def _roc_figure(labels: np.ndarray, scored: list[_Scored], horizon_days: int) -> str:
    title = f"ROC: churn within {horizon_days} days"
    caption = (
        "Lowering the score threshold flags more customers: each curve shows the share of "
        "churners caught (y) against the share of retained customers wrongly flagged (x); "
        "the closer to the top-left corner (higher AUC), the better the churn ranking."
    )
    usable = [s for s in scored if s.churn_score is not None]
    churned = labels.sum()
    reason = ""
    if not usable:
        reason = "n/a: no model provides a churn score"
    elif churned == 0:
        reason = "n/a: no holdout customer churned"
    elif churned == len(labels):
        reason = "n/a: every holdout customer churned"
    if reason:
        return _figure(_placeholder(_WIDTH, _HEIGHT, title, reason), _WIDTH, caption)
    frame = _Frame(_WIDTH, _HEIGHT, (0.0, 1.0), (0.0, 1.0))
    ticks = [i / 5 for i in range(6)]
    body = [_title(_WIDTH, title)]
    body += _axes(
        frame,
        ticks,
        ticks,
        lambda v: f"{v:.1f}",
        lambda v: f"{v:.1f}",
        "false positive rate (retained customers flagged)",
        "true positive rate (churners caught)",
    )
    body.append(_polyline(frame, [(0, 0), (1, 1)], _REFERENCE, width=1.5, dash="4 4"))
    curves = []
    for s in reversed(usable):
        assert s.churn_score is not None
        curve = metrics.roc_curve(labels, s.churn_score, _ROC_POINTS)
        curves.append(curve)
        body.append(_polyline(frame, curve, s.color, tooltip=s.model.name))
    entries = [(f"{s.model.name}: AUC {_fixed(s.values['auc'])}", s.color, "") for s in usable]
    entries.append(("Random: AUC 0.500", _REFERENCE, "4 4"))
    body += _legend(frame, entries, curves)
    return _figure(_svg(_WIDTH, _HEIGHT, title, body), _WIDTH, caption)


def _importance_figures(scored: list[_Scored]) -> list[str]:
    figures = []
    for s in scored:
        for target, items in s.model.feature_importance.items():
            clean = [(str(n), float(v)) for n, v in items if math.isfinite(float(v))]
            if clean:
                top = sorted(clean, key=lambda kv: kv[1], reverse=True)[:_TOP_FEATURES]
                figures.append(_importance_figure(s, str(target), top))
    if not figures:
        title = "Feature importance"
        message = "n/a: no model reports feature importance"
        caption = "Feature importance appears here for models that report it (not baselines)."
        figures.append(_figure(_placeholder(_WIDTH, 160, title, message), _WIDTH, caption))
    return figures


def _importance_figure(s: _Scored, target: str, items: list[tuple[str, float]]) -> str:
    values = [v for _n, v in items]
    # Shares of a total (as training reports gain) read best as percentages.
    shares = min(values) >= 0 and sum(values) <= 1.0 + 1e-9
    value_format: Callable[[float], str] = _percent if shares else _compact
    label_format: Callable[[float], str] = (
        (lambda v: f"{v:.1%}") if shares else (lambda v: f"{v:.3g}")
    )
    lo, hi, ticks = _nice_scale(min(0.0, *values), max(0.0, *values), 4)
    row = 20
    height = 40 + row * len(items) + 44
    frame = _Frame(
        _WIDTH, height, (lo, hi), (0.0, float(len(items))), left=190, right=60, top=40, bottom=44
    )
    title = f"{s.model.name}: {target}"
    body = [_title(_WIDTH, title)]
    body += _axes(frame, ticks, [], value_format, _compact, "importance", "")
    zero = frame.x(0.0)
    for i, (name, value) in enumerate(items):
        y_top = frame.y_range[0] + i * row + 3
        x = frame.x(value)
        body.append(
            f'<rect x="{_n(min(x, zero))}" y="{_n(y_top)}" width="{_n(abs(x - zero))}" '
            f'height="{row - 6}" fill="{s.color}"><title>{_esc(name)}: {_esc(label_format(value))}'
            "</title></rect>"
        )
        body.append(_text(frame.left - 6, y_top + 11, _truncate(name, 27), anchor="end"))
        body.append(_text(max(x, zero) + 4, y_top + 11, label_format(value), cls="value"))
    caption = (
        f"Top {len(items)} features of the {target} model by importance as reported by training "
        "(e.g. share of total gain): a longer bar means the model relied on the feature more, "
        "which is not a causal effect."
    )
    return _figure(_svg(_WIDTH, height, title, body), _WIDTH, caption)


_CSS = """
:root{color-scheme:light}
body{margin:0;background:#f6f7f9;color:#1f2937;
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 12px;padding-bottom:4px;border-bottom:1px solid #e5e7eb}
nav{font-size:13px;color:#6b7280;margin-bottom:16px}
nav a{color:#2563eb;text-decoration:none}
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
figure{margin:0;max-width:100%;box-sizing:content-box;background:#fff;border:1px solid #e5e7eb;
border-radius:8px;padding:8px}
figure svg{display:block;width:100%;height:auto}
figcaption{color:#6b7280;font-size:12.5px;padding:6px 4px 2px}
svg text{font-family:inherit;font-size:11px;fill:#374151}
svg text.title{font-size:13px;font-weight:600;fill:#111827}
svg text.label{font-size:12px;fill:#4b5563}
svg text.value{font-size:10.5px;fill:#4b5563}
svg text.na{font-size:13px;fill:#6b7280}
svg text.halo{paint-order:stroke;stroke:#fff;stroke-width:3px}
svg .grid{stroke:#eef0f3;stroke-width:1}
svg .axis{stroke:#9ca3af;stroke-width:1}
svg .legend{fill:#fff;fill-opacity:.9;stroke:#e5e7eb}
svg .empty{fill:#f9fafb;stroke:#e5e7eb;stroke-dasharray:4 4}
@media print{body{background:#fff}figure,.card{break-inside:avoid}}
""".replace("\n", "")
