"""A backtest result as text (`clv backtest`'s output) and as a self-contained HTML section/page."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.training.backtest_plan import METHODS, TITLES
from app.training.backtest_verdict import headline


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
