"""The HTML sections of the model card that are text and tables: data, eligibility, the metrics
table, in time vs out of time, challengers, feature ranges.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.training.report_scores import Scored


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def fixed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def chart_row(figures: Sequence[str]) -> str:
    return f'<div class="charts">{"".join(figures)}</div>'


def facts_card(items: dict[str, str]) -> str:
    facts = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items.items())
    return f'<div class="card"><dl class="facts">{facts}</dl></div>'


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def eligibility_section(manifest: Any) -> str:
    eligibility = getattr(manifest, "eligibility", None) or {}
    if not eligibility:
        return '<p class="note">Eligibility: not recorded in this manifest.</p>'
    return "<h3>Eligibility</h3>" + facts_card({k: _flat(v) for k, v in eligibility.items()})


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


def metrics_section(
    scored: list[Scored], clv_horizon_days: int, churn_horizon_days: int, currency: str
) -> str:
    if not scored:
        return '<p class="na">n/a: no models were evaluated.</p>'
    best: dict[str, float | None] = {}
    for key, _header, _tip, better in _COLUMNS:
        present = [v for s in scored if (v := s.values[key]) is not None]
        # A single value is trivially "best"; highlighting it would say nothing.
        best[key] = better(present) if len(present) >= 2 else None
    head = "".join(
        f'<th title="{esc(tip)}">{esc(header)}'
        + (f" ({esc(currency)})" if key in ("rmse", "mae") else "")
        + "</th>"
        for key, header, tip, _better in _COLUMNS
    )
    rows = []
    for s in scored:
        cells = []
        for key, *_rest in _COLUMNS:
            value = s.values[key]
            text = _money(value) if key in ("rmse", "mae") else fixed(value)
            is_best = value is not None and best[key] is not None and _same(value, best[key])
            shown = text if key in s.applicable else ""
            cells.append(f'<td class="{"num best" if is_best else "num"}">{shown}</td>')
        note = f'<div class="note">{esc(s.model.notes)}</div>' if s.model.notes else ""
        rows.append(
            f'<tr><td class="model"><span class="swatch" style="background:{s.color}"></span>'
            f"{esc(s.model.name)}{note}</td>{''.join(cells)}</tr>"
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


def holdout_section(clv_actual: np.ndarray, churn_actual: np.ndarray, currency: str) -> str:
    n_clv, n_churn = len(clv_actual), len(churn_actual)
    parts = [f"{n_clv:,} customers for CLV"]
    if n_clv:
        buyers = float(np.mean(clv_actual > 0))
        parts[0] += (
            f" (actual revenue {esc(currency)} {clv_actual.sum():,.2f} in total, "
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


def out_of_time_section(manifest: Any) -> str:
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
        cells = "".join(f'<td class="num">{fixed(a.get(k))}</td>' for k in _SIDE_KEYS)
        cells += "".join(f'<td class="num">{fixed(b.get(k))}</td>' for k in _SIDE_KEYS)
        rows.append(f'<tr><td class="model">{esc(_NAMES.get(name, name))}</td>{cells}</tr>')
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


def challengers_section(manifest: Any) -> str:
    training = getattr(manifest, "training", None) or {}
    block = training.get("challengers")
    families = training.get("families", {"clv": "xgboost", "churn": "xgboost"})
    served = f"<p>Serving: CLV by <strong>{esc(families.get('clv'))}</strong>, churn by <strong>{esc(families.get('churn'))}</strong>.</p>"
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
            f'<tr><td class="model">{esc(_NAMES.get(family, family))}</td>'
            f"<td>{esc(_flat(info.get('models', {})))}</td>"
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


def ranges_section(manifest: Any) -> str:
    ranges = getattr(manifest, "feature_ranges", None) or {}
    if not ranges:
        return '<p class="na">n/a: no training ranges recorded.</p>'
    rows = "".join(
        f'<tr><td class="model">{esc(name)}</td><td class="num">{lo:,.2f}</td>'
        f'<td class="num">{hi:,.2f}</td></tr>'
        for name, (lo, hi) in ranges.items()
    )
    return (
        '<div class="card"><table class="metrics"><thead><tr><th>Feature</th><th>min</th>'
        f"<th>max</th></tr></thead><tbody>{rows}</tbody></table>"
        '<p class="note">Over the rows the final models were fitted on; the API flags inputs '
        "outside them.</p></div>"
    )
