"""The HTML training report: self-contained, faithful to app.training.metrics, robust to edge cases."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.training import metrics
from app.training.report import render_report, write_report
from app.training.report_scores import PALETTE, EvaluatedModel

NASTY = 'XGBoost <b>"this"</b> & co'
CHART_SECTIONS = ("gain", "deciles", "churn", "importance")
ALL_SECTIONS = (
    "data",
    "metrics",
    "out-of-time",
    "challengers",
    "gain",
    "deciles",
    "churn",
    "coverage",
    "importance",
    "ranges",
)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[EvaluatedModel]]:
    """Skewed spend, churn related to value, a good model, a weak baseline and a perfect oracle."""
    rng = np.random.default_rng(seed)
    value = rng.gamma(0.6, 300.0, n)
    clv_actual = np.where(rng.random(n) < 0.55, value * rng.lognormal(0.0, 0.6, n), 0.0)
    churn_p = 1.0 / (1.0 + np.exp(-(1.0 - 0.004 * value + rng.normal(0.0, 0.8, n))))
    churn_actual = (rng.random(n) < churn_p).astype(np.float64)
    model_p = np.clip(churn_p + rng.normal(0.0, 0.05, n), 0.0, 1.0)
    models = [
        EvaluatedModel(
            name=NASTY,
            clv_predicted=value * 0.5 * rng.lognormal(0.0, 0.4, n),
            churn_score=model_p,
            churn_probability=model_p,
            feature_importance={
                "CLV": [("recency_days", 0.4), ("frequency", 0.35), ("<monetary>", 0.25)],
                "Churn": [(f"feature_{i}", 1.0 / (i + 2)) for i in range(20)],
            },
            notes="depth=6 & eta<0.1",
        ),
        EvaluatedModel(
            name="Spend-rate heuristic",
            clv_predicted=value * rng.lognormal(0.0, 1.0, n),
            churn_score=-value,
            notes="churn score = recency",
        ),
        EvaluatedModel(name="Oracle", clv_predicted=clv_actual.copy()),
    ]
    return clv_actual, churn_actual, models


def render(
    clv_actual: np.ndarray, churn_actual: np.ndarray, models: list[EvaluatedModel], **overrides: Any
) -> str:
    kwargs: dict[str, Any] = {
        "title": "clv-service model v1 <test>",
        "summary": {"Version": "v1", "Parity": "passed & <fine>"},
        "clv_actual": clv_actual,
        "churn_actual": churn_actual,
        "models": models,
        "clv_horizon_days": 365,
        "churn_horizon_days": 90,
        "currency": "EUR",
    }
    kwargs.update(overrides)
    with warnings.catch_warnings():
        # Degenerate inputs must be handled, not leak numpy 0/0 warnings.
        warnings.simplefilter("error")
        return render_report(**kwargs)


class _MetricsTable(HTMLParser):
    """Rows of the metrics table body: model name and (classes, text) of each metric cell."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[tuple[str, str]]]] = []
        self._in_table = self._in_body = self._in_note = False
        self._cell: list[str] | None = None
        self._cell_class = ""
        self._cells: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        if tag == "table" and "metrics" in classes:
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self._cells = []
        elif self._in_body and tag == "td":
            self._cell, self._cell_class = [], classes
        elif self._cell is not None and tag == "div":
            self._in_note = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = self._in_body = False
        elif self._in_body and tag == "div":
            self._in_note = False
        elif self._in_body and tag == "td" and self._cell is not None:
            self._cells.append((self._cell_class, "".join(self._cell).strip()))
            self._cell = None
        elif self._in_body and tag == "tr":
            name = self._cells[0][1]
            self.rows.append((name, self._cells[1:]))

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._in_note:
            self._cell.append(data)


def table_rows(page: str) -> dict[str, list[tuple[str, str]]]:
    parser = _MetricsTable()
    parser.feed(page)
    return dict(parser.rows)


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match is not None, anchor
    return match.group(1)


COLUMNS = ("gini", "spearman", "bias", "rmse", "mae", "auc", "brier")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[EvaluatedModel]]:
    return synthetic(3000)


@pytest.fixture(scope="module")
def page(data: tuple[np.ndarray, np.ndarray, list[EvaluatedModel]]) -> str:
    return render(*data)


def test_one_self_contained_document(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<html") == 1
    assert page.rstrip().endswith("</html>")
    assert '<meta charset="utf-8">' in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\((?!#)", page)  # only references inside the page
    assert "@import" not in page
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))


def test_every_chart_section_has_its_svgs(page: str) -> None:
    for anchor in CHART_SECTIONS:
        assert "<svg" in section(page, anchor), anchor
    assert section(page, "gain").count("<svg") == 1
    assert section(page, "deciles").count("<svg") == 3  # small multiples, one per model
    assert section(page, "churn").count("<svg") == 2  # reliability and ROC
    assert section(page, "importance").count("<svg") == 2  # CLV and Churn of the first model
    assert page.count("<figcaption>") == page.count("<svg")


def test_metrics_table_matches_metrics_module(
    data: tuple[np.ndarray, np.ndarray, list[EvaluatedModel]], page: str
) -> None:
    clv_actual, churn_actual, models = data
    rows = table_rows(page)
    assert list(rows) == [NASTY, "Spend-rate heuristic", "Oracle"]
    for model in models:
        expected: dict[str, str] = dict.fromkeys(COLUMNS, "")
        clv = metrics.clv_metrics(clv_actual, model.clv_predicted)
        for key in ("gini", "spearman", "bias"):
            expected[key] = f"{clv[key]:.3f}"
        for key in ("rmse", "mae"):
            expected[key] = f"{clv[key]:,.2f}"
        if model.churn_score is not None:
            churn = metrics.churn_metrics(churn_actual, model.churn_score, model.churn_probability)
            expected["auc"] = f"{churn['auc']:.3f}"
            if "brier" in churn:
                expected["brier"] = f"{churn['brier']:.3f}"
        assert [text for _cls, text in rows[model.name]] == [expected[k] for k in COLUMNS]


def test_perfect_model_gets_the_best_gini_highlight(page: str) -> None:
    rows = table_rows(page)
    gini = {name: cells[COLUMNS.index("gini")] for name, cells in rows.items()}
    assert gini["Oracle"] == ("num best", "1.000")
    assert all("best" not in cls for name, (cls, _text) in gini.items() if name != "Oracle")
    # The oracle also has zero error and no bias: best in every CLV column.
    for key in ("spearman", "bias", "rmse", "mae"):
        assert "best" in rows["Oracle"][COLUMNS.index(key)][0]


def test_best_churn_values_are_highlighted(page: str) -> None:
    rows = table_rows(page)
    auc = COLUMNS.index("auc")
    assert "best" in rows[NASTY][auc][0]  # calibrated model vs spend-based baseline
    assert "best" not in rows["Spend-rate heuristic"][auc][0]
    # Only one model has a Brier score: nothing to compare, so no highlight.
    assert "best" not in rows[NASTY][COLUMNS.index("brier")][0]


def test_bias_best_means_closest_to_one() -> None:
    clv_actual, churn_actual, _ = synthetic(500, seed=3)
    models = [
        EvaluatedModel("over", clv_actual * 1.3 + 1.0),
        EvaluatedModel("under", clv_actual * 0.9),
        EvaluatedModel("way under", clv_actual * 0.2),
    ]
    rows = table_rows(render(clv_actual, churn_actual, models))
    bias = COLUMNS.index("bias")
    assert [("best" in rows[m.name][bias][0]) for m in models] == [False, True, False]


def test_text_is_escaped(page: str) -> None:
    assert NASTY not in page
    assert escape(NASTY) in page
    assert "depth=6 &amp; eta&lt;0.1" in page
    assert "passed &amp; &lt;fine&gt;" in page
    assert "<title>clv-service model v1 &lt;test&gt;</title>" in page
    assert "&lt;monetary&gt;" in page
    assert "<b>" not in page
    assert "<test>" not in page


def test_legends_show_gini_and_auc(
    data: tuple[np.ndarray, np.ndarray, list[EvaluatedModel]], page: str
) -> None:
    clv_actual, churn_actual, models = data
    gain, churn = section(page, "gain"), section(page, "churn")
    for model in models:
        gini = metrics.normalized_gini(clv_actual, model.clv_predicted)
        assert f"Gini {gini:.3f}" in gain
    assert "Perfect ranking: Gini 1.000" in gain
    auc = metrics.roc_auc(churn_actual, models[1].churn_score)  # type: ignore[arg-type]
    assert f"AUC {auc:.3f}" in churn


def test_each_model_keeps_its_colour(page: str) -> None:
    gain, deciles = section(page, "gain"), section(page, "deciles")
    for i in range(3):
        assert f"stroke: {PALETTE[i]}" in gain
    panels = deciles.split("<svg")[1:]
    for i, panel in enumerate(panels):
        assert f"fill: {PALETTE[i]}" in panel
        assert all(f"fill: {PALETTE[j]}" not in panel for j in range(3) if j != i)
    assert f'<span class="swatch" style="background:{PALETTE[1]}">' in page


def test_importance_shows_top_15_in_order(page: str) -> None:
    importance = section(page, "importance")
    assert "feature_0" in importance
    assert "feature_14" in importance
    assert "feature_15" not in importance
    assert importance.index(">feature_0<") < importance.index(">feature_1<")


def degenerate_cases() -> dict[str, tuple[np.ndarray, np.ndarray, list[EvaluatedModel]]]:
    clv, churn, models = synthetic(200, seed=1)
    n = len(clv)
    zero_importance = {"CLV": [("a", 0.0), ("b", 0.0)]}
    return {
        "all-zero actuals": (np.zeros(n), churn, models),
        "constant actuals": (np.full(n, 7.0), churn, models),
        "constant predictions": (
            clv,
            churn,
            [EvaluatedModel("flat", np.full(n, 3.0), np.full(n, 0.5), np.full(n, 0.5))],
        ),
        "single model": (clv, churn, models[:1]),
        "no models": (clv, churn, []),
        "churn all 0": (clv, np.zeros(n), models),
        "churn all 1": (clv, np.ones(n), models),
        "twenty customers": synthetic(20, seed=2),
        "one customer": synthetic(1, seed=2),
        "no churn outputs, zero importances": (
            clv,
            churn,
            [EvaluatedModel("clv only", clv * 0.8, feature_importance=zero_importance)],
        ),
        "misaligned arrays": (
            clv,
            churn[:50],
            [EvaluatedModel("short", clv[:10], churn[:7], churn[:7])],
        ),
        "integer and list inputs": (
            clv.round().astype(int),
            churn.astype(bool),
            [EvaluatedModel("ints", clv.round().astype(int), churn.astype(int))],
        ),
    }


@pytest.mark.parametrize("case", list(degenerate_cases()))
def test_degenerate_inputs_render(case: str) -> None:
    clv, churn, models = degenerate_cases()[case]
    page = render(clv, churn, models)
    assert page.rstrip().endswith("</html>")
    for anchor in CHART_SECTIONS:
        assert "<svg" in section(page, anchor)
    assert not re.search(r"\b(?:nan|inf)\b", page, re.I)  # no non-finite number leaked out


def test_degenerate_metrics_show_na() -> None:
    clv, churn, models = synthetic(200, seed=1)
    rows = table_rows(render(np.zeros(len(clv)), np.ones(len(churn)), models))
    cells = rows[NASTY]
    for key in ("gini", "spearman", "bias", "auc"):
        assert cells[COLUMNS.index(key)][1] == "n/a", key
    assert cells[COLUMNS.index("rmse")][1] != "n/a"
    assert cells[COLUMNS.index("brier")][1] != "n/a"
    # Not applicable (no churn output at all) stays blank rather than n/a.
    assert rows["Oracle"][COLUMNS.index("auc")][1] == ""

    flat = [EvaluatedModel("flat", np.full(len(clv), 5.0))]
    page = render(clv, churn, flat)
    flat_row = table_rows(page)["flat"]
    # A constant prediction ranks nobody, whatever the input order would give.
    assert flat_row[COLUMNS.index("gini")][1] == "n/a"
    assert flat_row[COLUMNS.index("spearman")][1] == "n/a"
    assert "flat: Gini n/a (constant prediction)" in section(page, "gain")
    assert "n/a: no model provides a churn score" in page


def test_single_class_churn_explains_missing_roc() -> None:
    clv, churn, models = synthetic(200, seed=1)
    assert "n/a: no holdout customer churned" in render(clv, np.zeros(len(churn)), models)
    assert "n/a: every holdout customer churned" in render(clv, np.ones(len(churn)), models)


def test_million_customers_give_a_small_page() -> None:
    clv, churn, models = synthetic(1_000_000, seed=5)
    page = render(clv, churn, models[:2])
    assert len(page.encode("utf-8")) < 300_000
    # Curves are summaries: no path grows with the number of customers.
    for path in re.findall(r' d="([^"]*)"', page):
        assert path.count(" L ") <= 250


def test_write_report_writes_utf8(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray, list[EvaluatedModel]]
) -> None:
    clv, churn, models = data
    target = tmp_path / "report.html"
    kwargs: dict[str, Any] = {
        "title": "Modèle – €",
        "summary": {"as_of": "2026-02-01"},
        "clv_actual": clv,
        "churn_actual": churn,
        "models": models,
        "clv_horizon_days": 365,
        "churn_horizon_days": 90,
        "currency": "€",
    }
    write_report(target, **kwargs)
    assert target.read_text(encoding="utf-8") == render_report(**kwargs)
    assert "Modèle – €".encode() in target.read_bytes()


def card_manifest(**changes: Any) -> SimpleNamespace:
    """The manifest fields the model card reads (a real Manifest has many more)."""
    base: dict[str, Any] = {
        "eligibility": {"customers_with_orders": 1234, "minimums": {"customers": 200}},
        "metrics": {"model": {"gini": 0.71, "auc": 0.8}, "spend_rate": {"gini": 0.5}},
        "metrics_out_of_time": {
            "model": {"gini": 0.69, "auc": 0.79},
            "linear": {"gini": 0.6123, "auc": 0.7711},
        },
        "cutoffs": {"clv": [dt.datetime(2026, 1, 31, tzinfo=dt.UTC)]},
        "validation": {"clv_gap_days": 365, "churn_gap_days": 90},
        "training": {
            "families": {"clv": "xgboost", "churn": "logistic"},
            "challengers": {
                "linear": {
                    "models": {"clv": "ridge", "churn": "logistic"},
                    "parity": {"passed": True, "clv_max_rel_diff": 1e-6, "churn_max_abs_diff": 0.0},
                }
            },
        },
        "clv_intervals": {
            "method": "conformal",
            "target_coverage": 0.8,
            "nominal_level": 0.7654,
            "calibration_coverage": 0.8011,
            "calibration_rows": 3765,
            "gap_days": 60,
            "coverage_80": 0.8123,
            "below_p10": 0.0321,
            "above_p90": 0.1556,
            "width_median": 12.5,
            "width_mean": 98.25,
            "coverage_by_decile": [0.8] * 10,
            "zero_share_by_decile": [0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9, 0.95],
            "non_buyers": {"fold_share": 0.6891, "share": 0.7784, "customers": 23570},
        },
        "feature_ranges": {"recency_days": [0.0, 540.0], "net_revenue": [-12.5, 98765.0]},
    }
    return SimpleNamespace(**{**base, **changes})


def test_model_card_sections_from_the_manifest(
    data: tuple[np.ndarray, np.ndarray, list[EvaluatedModel]],
) -> None:
    page = render(*data, manifest=card_manifest())
    for anchor in ALL_SECTIONS:
        section(page, anchor)
    assert "customers_with_orders" in section(page, "data")
    side = section(page, "out-of-time")
    assert "0.612" in side  # the challenger's out-of-time Gini
    assert "0.710" in side  # in time and out of time side by side
    assert "0.690" in side
    assert "2026-01-31" in side
    challengers = section(page, "challengers")
    assert "<strong>logistic</strong>" in challengers
    assert "passed" in challengers
    coverage = section(page, "coverage")
    assert "81.2%" in coverage
    assert "<svg" in coverage
    # Issue 11: the calibration and its semantics are stated, with tails and width.
    assert "<strong>marginal</strong>" in coverage
    assert "0.765" in coverage
    assert "3,765 out-of-time rows (fold gap 60 days)" in coverage
    assert "below p10 3.2%, above p90 15.6%" in coverage
    assert "median 12.50, mean 98.25" in coverage
    # The label shift it was calibrated with: expected share, fold share, on how many customers.
    assert "<strong>77.8%</strong> (BG/NBD on 23,570 customers" in coverage
    assert "against 68.9% in the fold" in coverage
    unshifted = card_manifest()
    unshifted.clv_intervals = {
        **unshifted.clv_intervals,
        "non_buyers": {"share": None, "reason": "lifetimes is not installed (extra `train`)"},
    }
    page = render(*data, manifest=unshifted)
    assert "Not shifted: lifetimes is not installed" in section(page, "coverage")
    ranges = section(page, "ranges")
    assert "net_revenue" in ranges
    assert "98,765" in ranges
    assert "total_gain" in section(page, "importance")  # the importance type is stated


def test_missing_manifest_parts_are_said_not_available(
    data: tuple[np.ndarray, np.ndarray, list[EvaluatedModel]],
) -> None:
    page = render(*data, manifest=card_manifest(clv_intervals={}, feature_ranges={}, training={}))
    assert "not available" in section(page, "coverage")
    assert "<svg" not in section(page, "coverage")
    assert "n/a: no training ranges" in section(page, "ranges")
    assert "No challengers trained" in section(page, "challengers")


def test_same_inputs_give_the_same_bytes(
    data: tuple[np.ndarray, np.ndarray, list[EvaluatedModel]], page: str
) -> None:
    assert render(*data) == page
    # Every inline SVG has its own ids: no two figures share a clip path or a glyph id.
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
