"""Alerts and webhooks: delivery throughput to a local receiver, `clv rescore` over many
customers, and the p99 of POST /v1/events?score=true beside a deliverer facing a hanging or a
fast receiver vs. a server without one (alternating windows, same run).

    .venv/bin/python -m bench.alerts [--customers 100000] [--alerts 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from app.config import Settings
from app.db import create_sync_engine
from app.webhooks.signing import new_secret
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
from bench.scoring import load
from tests.server import free_port, running_server

TEMPLATE = {
    "from": "active",
    "to": "at_risk",
    "model_version": "bench",
    "expected_value_at_risk": 91.4,
    "before": {
        "clv": 180.2,
        "churn_probability": 0.31,
        "lifecycle_stage": "active",
        "value_tier": "high",
        "expected_value_at_risk": 55.86,
        "model_version": "bench",
        "as_of": "2026-11-29T03:00:00Z",
    },
    "after": {
        "clv": 172.9,
        "churn_probability": 0.53,
        "lifecycle_stage": "at_risk",
        "value_tier": "high",
        "expected_value_at_risk": 91.4,
        "model_version": "bench",
        "as_of": "2026-11-30T03:00:00Z",
    },
    "source": "bench",
}


async def receiver_app(
    scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any
) -> None:
    """The local receiver: 204 at once, or (BENCH_RECEIVER=hang) no answer for a minute."""
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    if os.environ.get("BENCH_RECEIVER") == "hang":
        await asyncio.sleep(60)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@contextmanager
def receiver(mode: str) -> Iterator[str]:
    """The receiver in its own uvicorn process; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.alerts:receiver_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
        ],
        cwd=ROOT,
        env={**os.environ, "BENCH_RECEIVER": mode},
    )
    import httpx

    url = f"http://127.0.0.1:{port}/hook"
    for _ in range(200):
        try:
            httpx.post(url, timeout=0.2)
            break
        except httpx.TimeoutException:
            break  # the hanging one answers nothing: it is up
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait()


def add_endpoint(engine: Engine, url: str) -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                text(
                    "INSERT INTO webhook_endpoints (url, secret, enabled) VALUES (:u, :s, true) "
                    "RETURNING id"
                ),
                {"u": url, "s": new_secret()},
            ).scalar_one()
        )


def add_alerts(engine: Engine, n: int, tag: str) -> None:
    """`n` alerts shaped like real ones, spread over the first 1,000 customers."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                WITH c AS (SELECT id, external_id, row_number() OVER (ORDER BY id) AS rn
                           FROM customers ORDER BY id LIMIT 1000),
                     k AS (SELECT count(*) AS n FROM c)
                INSERT INTO alerts (alert_id, type, customer_id, occurred_at, data)
                SELECT 'msg_' || md5(:tag || g::text), 'customer.at_risk', c.id, now(),
                       CAST(:template AS jsonb) || jsonb_build_object('customer_id', c.external_id)
                FROM generate_series(1, :n) g, k JOIN c ON true
                WHERE c.rn = 1 + g % k.n
                """
            ),
            {"n": n, "tag": tag, "template": json.dumps(TEMPLATE)},
        )


def delivered(engine: Engine, endpoint: int) -> tuple[int, float]:
    """Deliveries done for the endpoint, and seconds between its first and last."""
    with engine.connect() as connection:
        n, first, last = connection.execute(
            text(
                "SELECT count(*), min(delivered_at), max(delivered_at) FROM webhook_deliveries "
                "WHERE endpoint_id = :e AND status = 'delivered'"
            ),
            {"e": endpoint},
        ).one()
    return int(n), (last - first).total_seconds() if n > 1 else 0.0


def drain(engine: Engine, endpoint: int) -> None:
    """Remove the endpoint, then wait for the deliverer to go idle (its in-flight sends end)."""
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM webhook_endpoints WHERE id = :e"), {"e": endpoint})
    time.sleep(5)


def wait_for(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def load_demo_database(url: str, customers: int, end: dt.datetime) -> None:
    engine = create_sync_engine(Settings(database_url=url))
    load_demo(engine, customers, end, seed=3)
    settle(engine)
    engine.dispose()


def throughput(url: str, env: dict[str, str], n: int, concurrency: int) -> dict[str, float]:
    """`clv deliver` alone sending `n` alerts to a local receiver."""
    engine = create_sync_engine(Settings(database_url=url))
    with receiver("ok") as hook:
        endpoint = add_endpoint(engine, hook)
        add_alerts(engine, n, f"tp{concurrency}")
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "deliver"],
            cwd=ROOT,
            env={**os.environ, **env, "CLV_WEBHOOKS_CONCURRENCY": str(concurrency)},
        )
        try:
            ok = wait_for(lambda: delivered(engine, endpoint)[0] >= n, 600)
        finally:
            process.terminate()
            process.wait()
        wall = time.perf_counter() - started
        done, span = delivered(engine, endpoint)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM webhook_endpoints"))
        connection.execute(text("UPDATE alerts SET dispatched_at = now()"))
    engine.dispose()
    assert ok, f"only {done} of {n} delivered"
    print(f"throughput c={concurrency}: {done / span:.0f}/s", file=sys.stderr)
    return {"n": done, "span": span, "rate": done / span, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--model-customers", type=int, default=5_000)
    parser.add_argument("--alerts", type=int, default=5_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--only-throughput", action="store_true", help="Just part 1, printed.")
    parser.add_argument("--interleaved", action="store_true", help="Only the A/B latency part.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    if args.interleaved:
        interleaved(args)
        return
    work = Path(tempfile.mkdtemp(prefix="clv-bench-alerts-"))
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    models = work / "models"
    lines: list[str] = []

    with fresh_database("clv_bench_alerts") as url:
        url += "?sslmode=disable"
        load_demo_database(url, args.model_customers, end)
        env = {
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": str(models),
            "CLV_LOG_LEVEL": "warning",
            "CLV_MODEL_POLL_SECONDS": "0",
            "CLV_WEBHOOKS_ALLOW_PRIVATE": "true",
        }
        run_clv(env, "train", "--stack", "2", "--no-baselines")
        run_clv(env, "score", "--store")  # every customer's baseline state

        # 1. Delivery throughput, `clv deliver` alone.
        rates = {c: throughput(url, env, args.alerts, c) for c in (16, 64)}
        if args.only_throughput:
            return

    # 3. clv rescore over many customers (its own database, the same model).
    with fresh_database("clv_bench_rescore") as url:
        url += "?sslmode=disable"
        started = time.perf_counter()
        load_demo_database(url, args.customers, end)
        print(
            f"loaded {args.customers:,} customers in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        env2 = {**env, "CLV_DATABASE_URL": url}
        t1 = (end - dt.timedelta(days=60)).date().isoformat()
        t2 = end.date().isoformat()
        _, plain = run_clv(env2, "score", "--out", str(work / "t2.parquet"), "--as-of", t2)
        _, baseline = run_clv(env2, "score", "--store", "--as-of", t1)
        out, rescore = run_clv(env2, "rescore", "--as-of", t2, "--no-progress")
        alerts = int(out.split(" alerts")[0].rsplit(" ", 1)[1].replace(",", ""))
        print(
            f"rescore: plain {plain:.1f} s, baseline {baseline:.1f} s, rescore {rescore:.1f} s, {alerts} alerts",
            file=sys.stderr,
        )

    lines += [
        "## Alerts and webhooks (issue 12)",
        "",
        header(
            f"make bench-alerts  (python -m bench.alerts --customers {args.customers} --alerts {args.alerts})"
        ),
        "- **Noisy machine**: 2 cores shared with ~7 parallel sessions (tests, other benchmarks) "
        "while this ran; treat the figures as lower bounds and the ratios as indicative.",
        "",
        "Delivery throughput: `clv deliver` alone, Postgres, a local uvicorn receiver answering "
        f"204 at once, {args.alerts:,} alerts shaped like real ones (about 700-byte bodies), "
        "each signed (Standard Webhooks) and its outcome stored.",
        "",
        "| concurrency (CLV_WEBHOOKS_CONCURRENCY) | delivered | events/s (first to last) | wall s incl. start |",
        "|---|---|---|---|",
        *(f"| {c} | {r['n']:,} | {r['rate']:.0f} | {r['wall']:.1f} |" for c, r in rates.items()),
        "",
        f"`clv rescore` over {args.customers:,} demo customers (Postgres), model trained on "
        f"{args.model_customers:,}: the baseline stored run as of {t1}, then the rescore as of "
        f"{t2} writing states and alerts for every change.",
        "",
        "| run | seconds | customers/s | alerts |",
        "|---|---|---|---|",
        f"| `clv score --out t2.parquet` (no store, the reference) | {plain:.1f} | {args.customers / plain:,.0f} | - |",
        f"| `clv score --store --as-of {t1}` (first states: baseline, no alerts) | {baseline:.1f} | {args.customers / baseline:,.0f} | 0 |",
        f"| `clv rescore --as-of {t2}` | {rescore:.1f} | {args.customers / rescore:,.0f} | {alerts:,} |",
        "",
        f"Rescore / plain scoring: {rescore / plain:.2f}x the time (storing the run, then the states "
        "and alerts, 5,000 customers per transaction). Wall times include process start and "
        "model load.",
    ]
    write_section("alerts", "\n".join(lines))
    interleaved(args, models)  # the latency part, in its own database


def latencies(path: Path) -> list[float]:
    """Per-request latencies (ms) from a loadgen --timeline file."""
    return [float(line.split()[1]) for line in path.read_text().splitlines() if line.strip()]


def interleaved(args: argparse.Namespace, models: Path | None = None) -> None:
    """score=true latency on two servers of one database, measured in alternating windows:
    A runs the deliverer (on its thread) against a hanging, then a fast receiver; B runs none.
    Alternating cancels the drift of a shared, noisy machine."""
    from bench.common import percentile

    work = Path(tempfile.mkdtemp(prefix="clv-bench-alerts-il-"))
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    with fresh_database("clv_bench_alerts_il") as url:
        url += "?sslmode=disable"
        load_demo_database(url, args.model_customers, end)
        env = {
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": str(models or work / "models"),
            "CLV_LOG_LEVEL": "warning",
            "CLV_MODEL_POLL_SECONDS": "0",
            "CLV_WEBHOOKS_ALLOW_PRIVATE": "true",
            "CLV_AUTH_DISABLED": "false",
        }
        if models is None:
            run_clv(env, "train", "--stack", "2", "--no-baselines")
        run_clv(env, "score", "--store")
        engine = create_sync_engine(Settings(database_url=url))
        ids = sample_customer_ids(engine, 3000)
        key = bench_key(engine)
        counter = iter(range(10**9))

        def window(base: str, name: str) -> list[float]:
            now = dt.datetime.now(dt.UTC)
            batch = [
                {
                    "method": "POST",
                    "path": "/v1/events?score=true",
                    "body": {
                        "event_id": f"il-{next(counter)}",
                        "customer_id": ids[n % len(ids)],
                        "type": "product_view",
                        "occurred_at": (now - dt.timedelta(seconds=n)).isoformat(),
                    },
                }
                for n in range(int(args.rate * args.window) + 200)
            ]
            timeline = work / f"{name}-{next(counter)}.timeline"
            load(
                base,
                batch,
                work,
                name,
                key,
                mode="rate",
                rate=args.rate,
                duration=args.window,
                warmup=0,
                timeline=timeline,
            )
            return latencies(timeline)

        results: dict[str, list[float]] = {}
        with running_server(env, timeout=120) as a:
            time.sleep(3)  # A's deliverer takes the lock before B exists
            b_env = {**env, "CLV_WEBHOOKS_DELIVER_IN_SERVE": "false"}
            with running_server(b_env, timeout=120) as b:
                for mode, queued in (("hang", args.alerts), ("ok", 4 * args.alerts)):
                    with receiver(mode) as hook:
                        endpoint = add_endpoint(engine, hook)
                        add_alerts(engine, queued, f"il-{mode}")
                        time.sleep(2)
                        for r in range(args.rounds):
                            order = [(a, "A"), (b, "B")] if r % 2 == 0 else [(b, "B"), (a, "A")]
                            for base, side in order:
                                results.setdefault(f"{mode}-{side}", []).extend(
                                    window(base, f"{mode}-{side}")
                                )
                        done, _ = delivered(engine, endpoint)
                        results[f"{mode}-delivered"] = [float(done)]
                        drain(engine, endpoint)
        engine.dispose()

    def row(label: str, key: str, baseline: str) -> str:
        ms = results[key]
        p99 = percentile(ms, 99)
        return (
            f"| {label} | {len(ms)} | {percentile(ms, 50):.1f} | {percentile(ms, 95):.1f} | "
            f"{p99:.1f} | {p99 / percentile(results[baseline], 99):.2f} |"
        )

    body = "\n".join(
        [
            "### `score=true` p99 beside the deliverer, interleaved",
            "",
            header(
                f"python -m bench.alerts --interleaved --rounds {args.rounds} --window {args.window:.0f}"
            ),
            "- Noisy machine (2 shared cores, other sessions running): the windows alternate "
            "between the two servers so that drift hits both alike.",
            "",
            f"Two `clv serve` workers on one database: **A** runs the deliverer (its own thread), "
            f"**B** none (CLV_WEBHOOKS_DELIVER_IN_SERVE=false). `POST /v1/events?score=true` at "
            f"{args.rate:.0f} req/s, {args.rounds} windows of {args.window:.0f} s per server and "
            "receiver, alternating A/B; latencies pooled per server.",
            "",
            "| server, receiver | requests | p50 ms | p95 ms | p99 ms | p99 / B |",
            "|---|---|---|---|---|---|",
            row(f"A, receiver that never answers ({args.alerts:,} queued)", "hang-A", "hang-B"),
            row("B, same windows, no deliverer", "hang-B", "hang-B"),
            row(
                f"A, fast receiver ({4 * args.alerts:,} queued, "
                f"{int(results['ok-delivered'][0]):,} delivered meanwhile)",
                "ok-A",
                "ok-B",
            ),
            row("B, same windows, no deliverer", "ok-B", "ok-B"),
        ]
    )
    write_section("alerts-latency", body)


if __name__ == "__main__":
    main()
