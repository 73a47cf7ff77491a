"""CPU per single prediction vs `/healthz`, this checkout against a baseline revision, interleaved.

Loads synthetic customers plus the heavy customer of `bench.scoring` into a fresh database (or
uses `--database-url`), trains a model (or uses `--model-dir`), then starts one `clv serve`
worker per revision: this checkout and `--baseline` (a `git archive` of it in a temporary
directory, run by the same interpreter) and `--revision` (default HEAD, so the figures are those
of committed code). Each round drives every worker with `bench.loadgen`
(32 connections, saturation), `/healthz` then single predictions of random customers,
revision order alternating between rounds. Besides req/s it records the worker's own CPU time
per answered request (`/proc/<pid>/stat` utime+stime over the run / requests), which a busy
machine disturbs much less than throughput. Then single predictions at fixed rates (open loop)
on both workers, for p99 at a given rate.

    .venv/bin/python -m bench.prediction_overhead [--baseline main] [--rounds 5] [--rates 200,300,400,500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader
from app.features.repository import (
    FeatureMatrix,
    _matrix,
    _one_row,
    aggregate_statement,
    time_params,
)
from bench.common import (
    ROOT,
    bench_key,
    fresh_database,
    header,
    load_demo,
    run_clv,
    sample_customer_ids,
    settle,
    write_section,
)
from bench.scoring import HEAVY, heavy_customer
from tests.server import served_process

TICKS = os.sysconf("SC_CLK_TCK")

CHANGES = """What the branch changes on the single-prediction path (after the first pass, "Per-request
overhead of a single prediction" above), found by profiling a worker at saturation (py-spy) and
an in-process loop over the ASGI app (cProfile, `time.process_time`):

- One customer's feature vector on Python floats (`compute_features_one`; since then the one
  definition `feature_columns` on its float backend) instead of numpy on a
  one-row matrix: the same IEEE operations in the same order, compared byte for byte with
  `compute_features` by `tests/features/test_scalar_features.py` and by the online = offline
  tests (PostgreSQL and SQLite).
  Its CPU in isolation is in the last table below.
- `PredictionRoute`: a request without a query string and with a plain customer id skips
  FastAPI's `solve_dependencies` (the same auth dependency and endpoint are called directly);
  anything else goes through FastAPI, so errors and the OpenAPI document are unchanged (the
  latter compared byte for byte with main's).
- Left as they were, each a few per cent of the request or less in the profiles: the ONNX call,
  the post-processing and the response model, the metrics; and not changed: the asyncpg round
  trip (its client CPU is mostly encoding the 30 window and day parameters), Starlette routing
  and the middlewares, uvicorn and the socket writes, which `/healthz` pays too.
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def load_data(url: str, customers: int) -> None:
    """Demo customers over three years plus the heavy customer, then VACUUM (ANALYZE)."""
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    engine = create_sync_engine(Settings(database_url=url))
    load_demo(engine, customers, end)
    BulkLoader(engine, "USD").load(heavy_customer(end))
    settle(engine)
    engine.dispose()


def checkout(revision: str, into: Path) -> Path:
    """The tracked files of `revision` extracted into `into` (git archive; no worktree)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def short(revision: str) -> str:
    """The abbreviated commit id of a revision."""
    return subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@contextmanager
def worker(directory: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """`clv serve` (one worker, in-process) from `directory`'s code; (base URL, pid)."""
    with served_process(env, cwd=directory) as (base, process):
        yield base, process.pid


def drive(base: str, pid: int, requests: Path, key: str, **options: object) -> dict[str, Any]:
    """One bench.loadgen run (no warm-up) with the worker's CPU time per answered request."""
    args = [sys.executable, "-m", "bench.loadgen", "--url", base, "--requests", str(requests)]
    args += ["--header", f"Authorization: Bearer {key}", "--warmup", "0"]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    before = cpu_seconds(pid)
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pid) - before
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    answered = sum(int(v) for k, v in summary["statuses"].items() if str(k).startswith("2"))
    bad = summary["requests"] - answered + int(summary["errors"])
    summary["bad"] = bad
    summary["cpu_us"] = used / max(summary["requests"], 1) * 1e6
    return summary


def feature_cpu(url: str, customers: int = 500, repeats: int = 5) -> dict[str, float]:
    """CPU µs per customer of one customer's features from its SQL row: numpy on a one-row
    matrix (`_matrix`, before) and Python floats (`_one_row`); best of `repeats` passes."""
    as_of = dt.datetime.now(dt.UTC)
    engine = create_sync_engine(Settings(database_url=url))
    with engine.connect() as connection:
        rows = connection.execute(
            aggregate_statement("postgresql", "range"),
            {**time_params(as_of), "lo": 0, "hi": 2**62},
        ).all()[:customers]
    engine.dispose()
    paths: dict[str, Callable[[Any, dt.datetime], FeatureMatrix]] = {
        "numpy one-row matrix": lambda row, moment: _matrix([row], moment),
        "Python floats": _one_row,
    }
    out = {}
    for name, one in paths.items():
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            for row in rows:
                one(row, as_of)
            best = min(best, (time.process_time() - started) / len(rows) * 1e6)
        out[name] = best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="main", help="git revision to compare against")
    parser.add_argument("--revision", default="HEAD", help="git revision measured against it")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--database-url", help="an already loaded and migrated database")
    parser.add_argument("--model-dir", help="an artifact directory (with `current`) to serve")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rates", default="200,300,400,500")
    parser.add_argument("--rate-duration", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="print only, no BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clv-overhead-"))
    with ExitStack() as stack:
        if args.database_url:
            url = args.database_url
        else:
            url = stack.enter_context(fresh_database("clv_bench_overhead")) + "?sslmode=disable"
            load_data(url, args.customers)
        engine = create_sync_engine(Settings(database_url=url))
        ids = sample_customer_ids(engine, 5000)
        with engine.connect() as connection:
            events = connection.execute(text("SELECT count(*) FROM events")).scalar_one()
            customers = connection.execute(text("SELECT count(*) FROM customers")).scalar_one()
        key = bench_key(engine, "bench-overhead")
        engine.dispose()
        env = {
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": args.model_dir or str(work / "models"),
            "CLV_LOG_LEVEL": "warning",
            "CLV_MODEL_POLL_SECONDS": "0",
        }
        if not args.model_dir:
            run_clv(env, "train", "--stack", "2", "--no-baselines")
        health, single = work / "healthz.jsonl", work / "single.jsonl"
        health.write_text(json.dumps({"method": "GET", "path": "/healthz", "body": None}) + "\n")
        single.write_text(
            "".join(
                json.dumps({"method": "GET", "path": f"/v1/customers/{i}/prediction", "body": None})
                + "\n"
                for i in [*ids, HEAVY]
            )
        )
        revisions = {
            f"{label} ({short(rev)})": checkout(rev, work / label)
            for label, rev in (("baseline", args.baseline), ("branch", args.revision))
        }
        servers = {
            name: stack.enter_context(worker(directory, env))
            for name, directory in revisions.items()
        }
        for base, pid in servers.values():  # warm-up: connections, caches, first allocations
            drive(base, pid, single, key, mode="saturate", connections=8, duration=2)
        saturation: dict[tuple[str, str], list[dict[str, Any]]] = {}
        loads = [("healthz", health), ("prediction", single)]
        for round_ in range(args.rounds):
            names = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in names:
                base, pid = servers[name]
                for what, requests in loads:
                    result = drive(
                        base, pid, requests, key, mode="saturate", connections=32,
                        duration=args.duration,
                    )  # fmt: skip
                    saturation.setdefault((name, what), []).append(result)
                    print(round_, name, what, result, file=sys.stderr)
        features = feature_cpu(url)
        rates = [float(r) for r in args.rates.split(",") if r]
        fixed: dict[tuple[str, float], dict[str, Any]] = {}
        for rate in rates:
            for name, (base, pid) in servers.items():
                result = drive(
                    base, pid, single, key, mode="rate", rate=rate, duration=args.rate_duration
                )
                fixed[(name, rate)] = result
                print(name, rate, result, file=sys.stderr)
                time.sleep(1)

    def med(name: str, what: str, field: str) -> float:
        return statistics.median(float(r[field]) for r in saturation[(name, what)])

    def ratios(name: str, field: str) -> list[float]:
        return [
            float(p[field]) / float(h[field])
            for h, p in zip(
                saturation[(name, "healthz")], saturation[(name, "prediction")], strict=True
            )
        ]

    baseline, branch = list(servers)
    rows = [
        f"Data: {customers:,} customers ({args.customers:,} demo + the heavy one of `bench.scoring`), "
        f"{events:,} events; one `clv serve` worker per revision on the same database and model, "
        f"driven by `bench/loadgen.py` (32 connections, {args.duration:.0f} s, saturation), "
        f"{args.rounds} rounds, revision order alternating. Load average at the end: "
        f"{os.getloadavg()[0]:.1f}. CPU = the worker's utime+stime over the run / requests.",
        "",
        "| Revision | `/healthz` req/s | prediction req/s | req/s ratio | CPU µs/request healthz | CPU µs/request prediction | CPU ratio (healthz / prediction) | bad answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in servers:
        bad = sum(int(r["bad"]) for w in ("healthz", "prediction") for r in saturation[(name, w)])
        rows.append(
            f"| {name} | {med(name, 'healthz', 'rps'):,.0f} | {med(name, 'prediction', 'rps'):,.0f} "
            f"| {statistics.median(ratios(name, 'rps')):.3f} "
            f"| {med(name, 'healthz', 'cpu_us'):,.0f} | {med(name, 'prediction', 'cpu_us'):,.0f} "
            f"| {1 / statistics.median(ratios(name, 'cpu_us')):.3f} | {bad} |"
        )
    gain = med(baseline, "prediction", "cpu_us") / med(branch, "prediction", "cpu_us")
    base_cpu, branch_cpu = (
        med(baseline, "prediction", "cpu_us"),
        med(branch, "prediction", "cpu_us"),
    )
    rows += [
        "",
        "Medians over the rounds; the ratios are medians of the per-round ratios (same worker, "
        "back to back). CPU per prediction, "
        f"{baseline} / {branch}: **{gain:.2f}x** ({base_cpu:,.0f} -> {branch_cpu:,.0f} µs, "
        f"{100 * (1 - branch_cpu / base_cpu):.0f} % less).",
        "",
        f"Single predictions at a fixed rate (open loop, {args.rate_duration:.0f} s each, latency "
        "from the scheduled send time):",
        "",
        "| Rate (req/s) | Revision | achieved req/s | p50 ms | p95 ms | p99 ms | bad answers |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        for name in servers:
            r = fixed[(name, rate)]
            rows.append(
                f"| {rate:,.0f} | {name} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                f"| {r['p99_ms']:.1f} | {r['bad']} |"
            )
    rows += [
        "",
        "One customer's features from its SQL row, in-process (500 customers, best of 5 passes):",
        "",
        "| Path | CPU µs per customer |",
        "|---|---:|",
        *(f"| {name} | {us:,.1f} |" for name, us in features.items()),
    ]
    body = (
        header(f"python -m bench.prediction_overhead {' '.join(sys.argv[1:])}")
        + "\n"
        + CHANGES
        + "\n"
        + "\n".join(rows)
    )
    print(body)
    if not args.no_write:
        write_section(
            "hot-path-2",
            "## Per-request CPU of a single prediction, second pass (issue 13)\n\n" + body,
        )


if __name__ == "__main__":
    main()
