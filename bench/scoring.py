"""Scoring performance: a real uvicorn worker on Postgres with 100k customers / 2M events,
driven over loopback by `bench.loadgen` in a separate process.

Measured in one run: /healthz saturation (the baseline), single-prediction saturation and latency
at a fixed 500 req/s, a heavy customer (10,000 events) and ordinary ones at the same rate, batch
predictions of 1,000 customers, POST /v1/events?score=true at 200 req/s, and `clv score` over
every customer; then single predictions on one worker and, right after, on `clv serve --workers N`
(default 2).

    .venv/bin/python -m bench.scoring [--customers 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.db import create_sync_engine
from app.events.bulk import BulkLoader, EventColumns
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
from tests.server import running_server

HEAVY = "bench-heavy-customer"


def heavy_customer(end: dt.datetime, events: int = 10_000) -> EventColumns:
    """One customer with `events` events over three years (a fifth of them orders)."""
    rng = np.random.default_rng(0)
    end_us = int(end.timestamp() * 1_000_000)
    times = np.sort(rng.integers(end_us - 3 * 365 * 86_400_000_000, end_us, events))
    kinds = np.where(np.arange(events) % 5 == 0, "order", "product_view").astype(object)
    cents = np.where(kinds == "order", rng.integers(500, 20_000, events), -1)
    return EventColumns(
        event_id=np.array([f"{HEAVY}-{i}" for i in range(events)], dtype=object),
        customer_external_id=np.array([HEAVY] * events, dtype=object),
        type=kinds,
        occurred_at_us=times.astype(np.int64),
        amount_cents=cents.astype(np.int64),
        order_id=np.array(
            [f"{HEAVY}-o{i}" if k == "order" else "" for i, k in enumerate(kinds)], dtype=object
        ),
    )


def load(
    base: str, requests: list[dict[str, Any]], work: Path, name: str, key: str, **options: object
) -> dict[str, Any]:
    """Run bench.loadgen in its own process, authenticated with `key`; its JSON summary."""
    path = work / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    args = [sys.executable, "-m", "bench.loadgen", "--url", base, "--requests", str(path)]
    args += ["--header", f"Authorization: Bearer {key}"]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    print(name, summary, file=sys.stderr)
    return summary


def predictions_counted(base: str, key: str) -> int:
    """`clv_predictions_total{kind="single"}` as one /metrics scrape reports it (all workers)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "clv_predictions_total" and sample.labels.get("kind") == "single"
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument(
        "--workers", type=int, default=2, help="also run single predictions on this many workers"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clv-bench-scoring-"))
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    rows: list[str] = []
    with fresh_database("clv_bench_scoring") as url:
        # Loopback: no TLS between the service and its database (libpq's sslmode=disable).
        url = url + "?sslmode=disable"
        settings = Settings(database_url=url)
        engine = create_sync_engine(settings)
        started = time.perf_counter()
        events = load_demo(engine, args.customers, end)
        events += BulkLoader(engine, "USD").load(heavy_customer(end)).events_created
        load_seconds = time.perf_counter() - started
        # Otherwise the first minutes of every scenario pay for the bulk load (hint-bit
        # writes, autovacuum, a checkpoint).
        settle(engine)
        ids = sample_customer_ids(engine, 20000, exclude=HEAVY)
        key = bench_key(engine)
        engine.dispose()
        print(f"loaded {events:,} events in {load_seconds:.0f} s", file=sys.stderr)

        env = {
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": str(work / "models"),
            "CLV_LOG_LEVEL": "warning",
            "CLV_MODEL_POLL_SECONDS": "0",
        }
        _, train_seconds = run_clv(env, "train", "--stack", "2", "--no-baselines")
        score_out, score_seconds = run_clv(
            env, "score", "--out", str(work / "scores.parquet"), "--store"
        )

        rng = random.Random(7)
        health = [{"method": "GET", "path": "/healthz", "body": None}]
        single = [
            {"method": "GET", "path": f"/v1/customers/{i}/prediction", "body": None}
            for i in ids[:5000]
        ]
        heavy = [{"method": "GET", "path": f"/v1/customers/{HEAVY}/prediction", "body": None}]
        batches = [
            {
                "method": "POST",
                "path": "/v1/predictions/batch",
                "body": {"customer_ids": rng.sample(ids, 1000)},
            }
            for _ in range(20)
        ]
        now = dt.datetime.now(dt.UTC)
        ingest = [
            {
                "method": "POST",
                "path": "/v1/events?score=true",
                "body": {
                    "event_id": f"bench-score-{n}",
                    "customer_id": ids[n % len(ids)],
                    "type": "order" if n % 3 == 0 else "product_view",
                    "occurred_at": (now - dt.timedelta(seconds=n % 3600)).isoformat(),
                    **({"amount": "42.50", "currency": "USD"} if n % 3 == 0 else {}),
                },
            }
            for n in range(int(200 * args.duration) + 400)
        ]
        with running_server(env) as base:
            d = args.duration
            results = {
                "healthz": load(
                    base, health, work, "healthz", key, mode="saturate", connections=32, duration=d
                ),
                "single": load(
                    base, single, work, "single", key, mode="saturate", connections=32, duration=d
                ),
                "single_500": load(
                    base, single, work, "single_500", key, mode="rate", rate=500, duration=d
                ),
                "heavy": load(base, heavy, work, "heavy", key, mode="rate", rate=20, duration=d),
                # Issue 13: the heavy customer against ordinary ones, same rate, same run.
                "light": load(
                    base, single[:600], work, "light", key, mode="rate", rate=20, duration=d
                ),
                "batch": load(base, batches, work, "batch", key, mode="rate", rate=2, duration=d),
                "ingest": load(
                    base, ingest, work, "ingest", key, mode="rate", rate=200, duration=d, warmup=0
                ),
            }
            # Back to back with the two-worker runs below, so both see the same machine.
            results["single_1w"] = load(
                base, single, work, "single_1w", key, mode="saturate", connections=32, duration=d
            )
        if args.workers > 1:
            workers = str(args.workers)
            with running_server(env, "--workers", workers) as base:
                results["healthz_nw"] = load(
                    base,
                    health,
                    work,
                    "healthz_nw",
                    key,
                    mode="saturate",
                    connections=32,
                    duration=d,
                )
                results["single_nw"] = load(
                    base,
                    single,
                    work,
                    "single_nw",
                    key,
                    mode="saturate",
                    connections=32,
                    duration=d,
                )
                served = predictions_counted(base, key)
    scored = int(score_out.split("scored ")[1].split(" ")[0].replace(",", ""))

    def cell(name: str, field: str) -> str:
        value = results[name][field]
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    def errors(name: str) -> str:
        r = results[name]
        bad = int(r["errors"]) + sum(
            int(v) for k, v in r["statuses"].items() if not str(k).startswith("2")
        )
        return str(bad)

    ratio = float(results["single"]["rps"]) / float(results["healthz"]["rps"])
    light_events = (events - 10_000) / args.customers  # the heavy customer has 10,000
    rows += [
        f"Data: {args.customers:,} synthetic customers + 1 heavy customer, {events:,} events (loaded in {load_seconds:.0f} s, then `VACUUM (ANALYZE)` and `CHECKPOINT`, the steady state autovacuum keeps); "
        f"model trained by `clv train --stack 2 --no-baselines` in {train_seconds:.0f} s. One uvicorn worker (`clv serve`), "
        "Postgres on the same 2 cores, load generator (`bench/loadgen.py`, raw asyncio HTTP/1.1 keep-alive) in a separate process; "
        "fixed-rate runs are open-loop with latency measured from the scheduled send time.",
        "",
        "| Scenario | Requests | Errors | Throughput (req/s) | p50 ms | p95 ms | p99 ms | Target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| **Baseline**: `GET /healthz`, saturation (32 connections) | {cell('healthz', 'requests')} | {errors('healthz')} | {cell('healthz', 'rps')} | {cell('healthz', 'p50_ms')} | {cell('healthz', 'p95_ms')} | {cell('healthz', 'p99_ms')} | – |",
        f"| `GET /v1/customers/{{id}}/prediction`, saturation (32 connections) | {cell('single', 'requests')} | {errors('single')} | {cell('single', 'rps')} | {cell('single', 'p50_ms')} | {cell('single', 'p95_ms')} | {cell('single', 'p99_ms')} | ≥ 1,500 req/s and ≥ 0.25x `/healthz` |",
        f"| Single prediction at a fixed 500 req/s | {cell('single_500', 'requests')} | {errors('single_500')} | {cell('single_500', 'rps')} | {cell('single_500', 'p50_ms')} | {cell('single_500', 'p95_ms')} | {cell('single_500', 'p99_ms')} | p99 ≤ 10 ms |",
        f"| Heavy customer (10,000 events), 20 req/s | {cell('heavy', 'requests')} | {errors('heavy')} | {cell('heavy', 'rps')} | {cell('heavy', 'p50_ms')} | {cell('heavy', 'p95_ms')} | {cell('heavy', 'p99_ms')} | p99 ≤ 10 ms |",
        f"| Light customers (the demo's, ~{light_events:.0f} events each), 20 req/s | {cell('light', 'requests')} | {errors('light')} | {cell('light', 'rps')} | {cell('light', 'p50_ms')} | {cell('light', 'p95_ms')} | {cell('light', 'p99_ms')} | beside the heavy one |",
        f"| `POST /v1/predictions/batch`, 1,000 customers, 2 req/s | {cell('batch', 'requests')} | {errors('batch')} | {cell('batch', 'rps')} | {cell('batch', 'p50_ms')} | {cell('batch', 'p95_ms')} | {cell('batch', 'p99_ms')} | p50 ≤ 150 ms |",
        f"| `POST /v1/events?score=true` at 200 req/s | {cell('ingest', 'requests')} | {errors('ingest')} | {cell('ingest', 'rps')} | {cell('ingest', 'p50_ms')} | {cell('ingest', 'p95_ms')} | {cell('ingest', 'p99_ms')} | p99 reported |",
        "",
        f"Single prediction throughput is **{ratio:.2f}x** the `/healthz` throughput of the same worker in the same run.",
        f"`clv score --store` over all {scored:,} customers: {score_seconds:.1f} s including interpreter start "
        f"(**{scored / score_seconds:,.0f} customers/s**; `{score_out.strip()}`).",
    ]
    if args.workers > 1:
        one, many = float(results["single_1w"]["rps"]), float(results["single_nw"]["rps"])
        expected = sum(
            int(v)
            for name in ("single_nw",)
            for k, v in results[name]["statuses"].items()
            if str(k).startswith("2")
        )
        rows += [
            "",
            f"### `clv serve --workers {args.workers}` vs one worker",
            "",
            f"Same data and model; the one-worker run directly before the {args.workers}-worker server started (same run). "
            "Multiprocess metrics: a `/metrics` scrape (answered by any one worker) must count every prediction "
            "the workers served.",
            "",
            "| Scenario | Requests | Errors | Throughput (req/s) | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
            f"| single prediction, saturation, 1 worker | {cell('single_1w', 'requests')} | {errors('single_1w')} | {cell('single_1w', 'rps')} | {cell('single_1w', 'p50_ms')} | {cell('single_1w', 'p99_ms')} |",
            f"| `GET /healthz`, saturation, {args.workers} workers | {cell('healthz_nw', 'requests')} | {errors('healthz_nw')} | {cell('healthz_nw', 'rps')} | {cell('healthz_nw', 'p50_ms')} | {cell('healthz_nw', 'p99_ms')} |",
            f"| single prediction, saturation, {args.workers} workers | {cell('single_nw', 'requests')} | {errors('single_nw')} | {cell('single_nw', 'rps')} | {cell('single_nw', 'p50_ms')} | {cell('single_nw', 'p99_ms')} |",
            "",
            f"{args.workers} workers / 1 worker: **{many / one:.2f}x** single-prediction throughput "
            f"(target ≥ 1.5x on 2 cores shared with Postgres and the load generator). "
            f'`clv_predictions_total{{kind="single"}}` after the {args.workers}-worker runs: {served:,} '
            f"(2xx answers counted by the load generator in the measured window: {expected:,}; the difference is its 1 s warm-up).",
        ]
    body = header("make bench-scoring  (python -m bench.scoring)") + "\n" + "\n".join(rows)
    print(body)
    write_section("scoring", "## Scoring performance\n\n" + body)


if __name__ == "__main__":
    main()
