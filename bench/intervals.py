"""Issue 11: out-of-time coverage of the 80 % CLV interval, at the backtest origins and others.

For each real log, in a fresh Postgres database created and dropped here:
  1. `clv import-transactions` of the log;
  2. at every origin, `clv train`'s own code trains on what was known then (labels end at the
     origin), exactly as `clv backtest` does, and every customer known at the origin is scored
     through the served path (ONNX + manifest): [p10, p90] is judged against what each customer
     spent in (origin, origin + horizon] — a window the calibration never saw;
  3. baseline in the same run: the previous calibration (equal-tailed 10 / 90 % ratio quantiles
     by bin, no level search) fitted on the very same out-of-time fold rows, applied to the same
     served predictions.

Origins: the standard backtest origins of bench.backtest (CDNOW 1997-10-02, 1997-11-16,
1997-12-31; Online Retail 2011-06-11, 2011-07-26, 2011-09-09) plus origins that are in no standard
set (CDNOW 1997-09-05, 1997-10-25, 1997-12-05; Online Retail 2011-06-30, 2011-08-15), so that the
method is not judged only where it was looked at.

    .venv/bin/python -m bench.intervals [--only cdnow|online-retail] [--threads N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine

import app.training.calibration as calibration_module
import app.training.intervals as intervals_module
from app.features.definitions import parse_as_of
from app.features.repository import offline_matrix
from app.scoring.predictor import Predictor, clv_interval
from app.training.intervals import interval_summary
from app.training.options import TrainOptions
from app.training.repository import window_labels
from bench.backtest import DATA_SETS, DataSet
from bench.common import ROOT, fresh_database, header, run_clv, write_section

OUT = ROOT / "bench" / "out"
EXTRA_ORIGINS = {
    "cdnow": ("1997-09-05", "1997-09-20", "1997-10-25", "1997-11-01", "1997-12-05", "1997-12-15"),
    "online-retail": (
        "2011-05-20",
        "2011-06-30",
        "2011-07-05",
        "2011-08-01",
        "2011-08-15",
        "2011-08-25",
    ),
}
TARGET, TOLERANCE = 0.80, 0.05

#: The calibration inputs of the last `clv train` (the out-of-time fold rows), recorded by
#: wrapping fit_intervals: the baseline is fitted on exactly what the new method saw.
_seen: list[tuple[np.ndarray, np.ndarray, int]] = []
_fit = intervals_module.fit_intervals


def _recording_fit(predicted: np.ndarray, actual: np.ndarray, gap_days: int) -> dict[str, Any]:
    _seen.append((predicted.copy(), actual.copy(), gap_days))
    return _fit(predicted, actual, gap_days)


# Before app.training.train is imported, so that its `from ... import fit_intervals` binds this.
calibration_module.fit_intervals = _recording_fit  # type: ignore[assignment]
intervals_module.fit_intervals = _recording_fit  # type: ignore[assignment]

import app.training.train as train_module  # noqa: E402
from app.training.train import train  # noqa: E402

#: The CLV target's fit of the last `clv train` (its fold model's holdout predictions feed the
#: pooled diagnostic), recorded by wrapping finish_training.
_fitted: dict[str, Any] = {}
_finish = train_module.finish_training


def _recording_finish(*args: Any, **kwargs: Any) -> Any:
    _fitted["clv"] = args[4]["clv"]
    return _finish(*args, **kwargs)


train_module.finish_training = _recording_finish


def equal_tailed(predicted: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """The previous calibration (before this change), for the same-run baseline: per bin of
    predicted CLV the empirical 10 / 50 / 90 % quantiles of actual / predicted."""
    keep = predicted > 0
    p, y = predicted[keep], actual[keep]
    bins = max(1, min(10, len(p) // 50))
    groups = np.array_split(np.argsort(p, kind="stable"), bins)
    ratio = y / p
    table = [np.quantile(ratio[g], (0.1, 0.5, 0.9)) for g in groups]
    return {
        "centers": [float(np.median(p[g])) for g in groups],
        **{q: [float(t[i]) for t in table] for i, q in enumerate(("p10", "p50", "p90"))},
    }


def origins_of(data: DataSet) -> list[tuple[str, bool]]:
    """(origin, standard?) oldest first: the bench.backtest origins and the extra ones."""
    last = dt.date.fromisoformat(data.last_origin)
    standard = [
        (last - dt.timedelta(days=k * data.step_days)).isoformat()
        for k in reversed(range(data.origins))
    ]
    both = [(o, True) for o in standard] + [(o, False) for o in EXTRA_ORIGINS[data.key]]
    return sorted(both)


def run(data: DataSet, threads: int) -> dict[str, Any]:
    """Import the log, train and score at every origin; the figures per origin."""
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with fresh_database("clv_bench_intervals") as url:
        run_clv(
            {"CLV_DATABASE_URL": url, "CLV_CURRENCY": data.currency},
            "import-transactions",
            "--format",
            data.format,
            str(data.path),
        )
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            for text, standard in origins_of(data):
                origin = parse_as_of(text)  # end of that UTC day, as `clv backtest` reads it
                matrix = offline_matrix(engine, origin)
                actual, _ = window_labels(engine, origin, data.horizon_days, matrix.customer_ids)
                _seen.clear()
                with tempfile.TemporaryDirectory(prefix="clv-intervals-") as tmp:
                    result = train(
                        engine,
                        TrainOptions(
                            as_of=origin,
                            model_dir=Path(tmp),
                            clv_horizon_days=data.horizon_days,
                            churn_horizon_days=data.horizon_days,
                            threads=threads,
                            currency=data.currency,
                            baselines=False,
                            progress=False,
                            promote=False,
                        ),
                    )
                    served = Predictor(result.directory).predict(matrix.values)
                assert served.clv_p10 is not None
                assert served.clv_p90 is not None
                calibration = result.manifest.clv_intervals
                predicted, labels, _ = _seen[0]
                bounds = clv_interval(served.clv, equal_tailed(predicted, labels))
                assert bounds is not None
                # Diagnostic 1: twice the calibration rows (the fold model's holdout rows too), to
                # tell sampling noise from drift.
                clv_fit = _fitted["clv"]
                pooled_table = _fit(
                    np.r_[predicted, np.maximum(clv_fit.fold_holdout, 0.0)],
                    np.r_[labels, clv_fit.split.holdout.label],
                    result.manifest.clv_intervals["gap_days"],
                )
                pooled = clv_interval(served.clv, pooled_table)
                assert pooled is not None
                # Diagnostic 2 (an oracle, not a method): the served interval rescaled by the
                # window's actual total / predicted total, i.e. with the aggregate level known.
                level = actual.sum() / served.clv.sum() if served.clv.sum() > 0 else 1.0
                results.append(
                    {
                        "origin": text,
                        "standard": standard,
                        "customers": len(actual),
                        "calibration": {
                            key: calibration.get(key)
                            for key in (
                                "nominal_level",
                                "calibration_coverage",
                                "calibration_rows",
                                "gap_days",
                                "coverage_80",
                            )
                        },
                        "model": interval_summary(
                            served.clv, actual, served.clv_p10, served.clv_p90
                        ),
                        "baseline": interval_summary(served.clv, actual, bounds[0], bounds[2]),
                        "pooled": interval_summary(served.clv, actual, pooled[0], pooled[2]),
                        "pooled_rows": int(len(predicted) + len(clv_fit.fold_holdout)),
                        "clv_bias": float(served.clv.sum() / actual.sum()),
                        "oracle_level": interval_summary(
                            served.clv * level,
                            actual,
                            served.clv_p10 * level,
                            served.clv_p90 * level,
                        ),
                    }
                )
                m = results[-1]["model"]
                print(
                    f"{data.title} {text}: coverage {m['coverage_80']:.3f} (baseline "
                    f"{results[-1]['baseline']['coverage_80']:.3f})",
                    file=sys.stderr,
                )
        finally:
            engine.dispose()
    return {"origins": results, "seconds": time.perf_counter() - started}


def _within(value: float) -> bool:
    return abs(value - TARGET) <= TOLERANCE + 1e-12


def table(data: DataSet, result: dict[str, Any]) -> list[str]:
    """Markdown rows for one log."""
    lines = [
        f"### {data.title} ({data.horizon_days}-day horizon)",
        "",
        "| Origin | Set | Customers | Coverage (baseline) | below p10 | above p90 | median / mean "
        "width | coverage by decile 1..10 | zero share by decile | level | fold: rows, gap, "
        "coverage | holdout | CLV bias | pooled rows: coverage | level known: coverage |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for entry in result["origins"]:
        m, b, c = entry["model"], entry["baseline"], entry["calibration"]
        deciles = " ".join(f"{d['coverage']:.2f}" for d in m["coverage_by_decile"])
        zeros = " ".join(f"{d['zero_actual_share']:.2f}" for d in m["coverage_by_decile"])
        mark = "" if _within(m["coverage_80"]) else " ✗"
        lines.append(
            f"| {entry['origin']} | {'standard' if entry['standard'] else 'extra'} | "
            f"{entry['customers']:,} | **{m['coverage_80']:.3f}**{mark} ({b['coverage_80']:.3f}) | "
            f"{m['below_p10']:.3f} | {m['above_p90']:.3f} | {m['width_median']:,.2f} / "
            f"{m['width_mean']:,.2f} | {deciles} | {zeros} | {c['nominal_level']:.3f} | "
            f"{c['calibration_rows']:,}, {c['gap_days']} d, {c['calibration_coverage']:.3f} | "
            f"{c['coverage_80']:.3f} | {entry['clv_bias']:.3f} | {entry['pooled_rows']:,}: "
            f"{entry['pooled']['coverage_80']:.3f} | {entry['oracle_level']['coverage_80']:.3f} |"
        )
    return lines


def section(results: dict[str, dict[str, Any]], threads: int) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        "## CLV interval: marginal 80 % coverage out of time (issue 11)",
        "",
        header("python -m bench.intervals"),
        "Each origin: `clv train`'s code trained on what was known at the origin (threads "
        f"{threads}), every customer known then scored through the served path, [p10, p90] "
        "(in cents, as served) judged against the spend in the next horizon. 'Coverage "
        "(baseline)': the previous calibration (equal-tailed 10 / 90 % ratio quantiles by bin) "
        "fitted on the same out-of-time fold rows, applied to the same predictions, same run. "
        "'level': the nominal per-bin level the calibration chose; 'fold': the calibration rows, "
        "the fold's gap and the coverage reached on them; 'holdout': coverage on the holdout "
        "customers at the latest training cutoff (never used to calibrate). Width in the log's "
        "currency. ✗ = outside 0.80 ± 0.05. 'extra' origins are in no standard backtest set. "
        "Two diagnostics, same run, neither served: 'pooled rows' calibrates on the fold "
        "model's validation and holdout rows together (about twice the rows: how much of the "
        "miss is sampling noise); 'level known' rescales the served p10 / p90 by the window's "
        "actual total / predicted total (an oracle: how much of the miss is the aggregate level "
        "rather than the shape of the distribution, e.g. its share of non-buyers).",
        "",
        "Reading: the fold reaches 0.80 by construction and the holdout (same period, other "
        "customers) stays within sampling noise of it, so the calibration does what it says on "
        "exchangeable data. What moves the out-of-time figure is drift beyond the fold's gap "
        "(30–90 days here, against a 181 / 91-day horizon): on CDNOW the single 1997 cohort "
        "ages, more customers buy nothing than in the calibration window and the model's level "
        "is biased upwards, so the interval holds more than planned (coverage rises with the "
        "origin); on Online Retail the autumn / Q4 demand lift (no training label covers a Q4) "
        "puts more customers above p90 (coverage falls with the origin). The baseline's "
        "equal-tailed percentiles sit about 0.05–0.11 higher at every origin, with intervals "
        "about twice as wide on average: over-coverage from the atom at 0, which happened to "
        "offset the Q4 shortfall. A median width of 0 means that most customers get [0, 0]: "
        "their bins' share of non-buyers alone exceeds the level.",
        "",
    ]
    for data in DATA_SETS:
        if data.key in results:
            lines += [*table(data, results[data.key]), ""]
    return "\n".join([*lines, *verdict(results)])


def verdict(results: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 11's bar at the standard origins, and the same count at the extra ones."""
    lines = ["### Verdict on the bar (80 % ± 5 points at every origin)", ""]
    for standard in (True, False):
        entries = [
            (data.title, e)
            for data in DATA_SETS
            for e in results.get(data.key, {}).get("origins", [])
            if e["standard"] == standard
        ]
        if not entries:
            continue
        within = [e for _, e in entries if _within(e["model"]["coverage_80"])]
        before = [e for _, e in entries if _within(e["baseline"]["coverage_80"])]
        pooled = [e for _, e in entries if _within(e["pooled"]["coverage_80"])]
        oracle = [e for _, e in entries if _within(e["oracle_level"]["coverage_80"])]
        worst = max(abs(e["model"]["coverage_80"] - TARGET) for _, e in entries)
        worst_pooled = max(abs(e["pooled"]["coverage_80"] - TARGET) for _, e in entries)
        worst_oracle = max(abs(e["oracle_level"]["coverage_80"] - TARGET) for _, e in entries)
        misses = ", ".join(
            f"{title} {e['origin']} {e['model']['coverage_80']:.3f}"
            for title, e in entries
            if not _within(e["model"]["coverage_80"])
        )
        lines.append(
            f"- {'Standard' if standard else 'Extra'} origins: within the bar at **{len(within)} "
            f"of {len(entries)}** (baseline, same run: {len(before)} of {len(entries)})"
            + (f"; missed at {misses}." if misses else ".")
            + f" Worst distance from 0.80: {worst:.3f}. Diagnostics, same run: pooled rows "
            f"{len(pooled)} of {len(entries)} (worst {worst_pooled:.3f}); aggregate level known "
            f"{len(oracle)} of {len(entries)} (worst {worst_oracle:.3f})."
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=[d.key for d in DATA_SETS])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="Print, leave BENCHMARKS.md alone.")
    parser.add_argument("--from-out", action="store_true", help="Reuse bench/out/intervals-*.json.")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for data in DATA_SETS:
        if args.only and data.key != args.only:
            continue
        path = OUT / f"intervals-{data.key}.json"
        if args.from_out:
            results[data.key] = json.loads(path.read_text())
            continue
        results[data.key] = run(data, args.threads)
        path.write_text(json.dumps(results[data.key], indent=1) + "\n")
    body = section(results, args.threads)
    print(body)
    if not args.no_write:
        write_section("intervals-marginal-coverage", body)


if __name__ == "__main__":
    main()
