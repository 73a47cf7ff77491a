"""The model card's figures, drawn by matplotlib and inlined as SVG (no JavaScript, no network).

Determinism: the Agg-free SVG backend is driven through `Figure.savefig(format="svg")` with a
fixed `svg.hashsalt` per figure (unique ids across the inline SVGs of one page), text kept as
text (`svg.fonttype = none`, so the page stays small and searchable) and no metadata date.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from app.training import metrics
from app.training.report_scores import PALETTE, Scored, finite
from app.training.report_sections import esc, fixed

_PERFECT = "#111827"
_REFERENCE = "#9ca3af"
# Curves are summaries, never per-customer data, so the page size does not grow with the holdout.
_LORENZ_POINTS = 200
_ROC_POINTS = 101
_RELIABILITY_BINS = 10
_TOP_FEATURES = 15


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


class Charts:
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
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )

    def placeholder(self, title: str, message: str, caption: str) -> str:
        def build(figure: Figure) -> None:
            ax = figure.add_subplot()
            ax.set_axis_off()
            ax.set_title(title)
            ax.text(0.5, 0.5, message, ha="center", va="center", color="#6b7280")

        return self.figure(build, caption, (4.6, 2.4))

    def lorenz(self, actual: np.ndarray, scored: list[Scored], horizon_days: int) -> str:
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
                label=f"Perfect ranking: Gini {fixed(_perfect_gini(actual))}",
            )
            for s in usable:
                assert s.clv is not None
                label = f"{s.model.name}: Gini {fixed(s.values['gini'])}"
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
        self, actual: np.ndarray, scored: list[Scored], horizon_days: int, currency: str
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

            def build(figure: Figure, s: Scored = s, rows: list[Any] = rows) -> None:
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

    def reliability(self, labels: np.ndarray, scored: list[Scored], horizon_days: int) -> str:
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

    def roc(self, labels: np.ndarray, scored: list[Scored], horizon_days: int) -> str:
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
                    label=f"{s.model.name[:50]}: AUC {fixed(s.values['auc'])}",
                )
            ax.set_title(title)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(loc="lower right", fontsize=7.5)

        return self.figure(build, caption)

    def importance(self, scored: list[Scored]) -> list[str]:
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
    return finite(metrics.normalized_gini(actual, actual))


def _one_class(labels: np.ndarray) -> str:
    if len(labels) and labels.sum() == 0:
        return "n/a: no holdout customer churned"
    if len(labels) and labels.sum() == len(labels):
        return "n/a: every holdout customer churned"
    return "n/a: too few holdout customers"
