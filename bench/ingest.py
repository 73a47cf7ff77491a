"""Ingestion benchmark: bulk import (CDNOW, synthetic) and the HTTP ingest endpoints.

Baselines measured in the same run:
- bulk import vs a naive row-by-row loader (psycopg executemany of INSERT ... ON CONFLICT DO NOTHING),
- batch endpoint vs the single-event endpoint (events/s over the same server).

    .venv/bin/python -m bench.ingest [--demo-customers 100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from app.auth.keys import ALL_SCOPES
from app.auth.repository import create_key
from app.config import Settings
from app.db import create_sync_engine, sync_url
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader, CustomerColumns, EventColumns
from app.events.transactions import read_cdnow
from bench.common import CDNOW, fresh_database, header, write_section
from tests.server import running_server


def bulk_rate(
    url: str, chunks: Sequence[tuple[EventColumns, CustomerColumns | None]], workers: int = 2
) -> tuple[int, float]:
    """Load pre-built chunks through BulkLoader; (events created, seconds)."""
    engine = create_sync_engine(Settings(database_url=url))
    loader = BulkLoader(engine, "USD")
    started = time.perf_counter()
    created = sum(s.events_created for s in loader.load_all(chunks, workers=workers))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return created, elapsed


def naive_rate(url: str, events: EventColumns, limit: int) -> tuple[int, float]:
    """Row-by-row executemany, the loader most scripts start with; (rows, seconds)."""
    engine = create_engine(sync_url(url))
    started = time.perf_counter()
    with engine.begin() as connection:
        customers = sorted(set(events.customer_external_id[:limit].tolist()))
        connection.execute(
            text("INSERT INTO customers (external_id) VALUES (:c) ON CONFLICT DO NOTHING"),
            [{"c": c} for c in customers],
        )
        ids: dict[str, int] = dict(
            connection.execute(text("SELECT external_id, id FROM customers")).all()
        )
        rows = [
            {
                "e": e,
                "c": ids[c],
                "t": t,
                "o": dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us),
                "a": None if cents < 0 else cents / 100,
                "cur": None if cents < 0 else "USD",
            }
            for e, c, t, us, cents in zip(
                events.event_id[:limit].tolist(),
                events.customer_external_id[:limit].tolist(),
                events.type[:limit].tolist(),
                events.occurred_at_us[:limit].tolist(),
                events.amount_cents[:limit].tolist(),
                strict=True,
            )
        ]
        for row in rows:  # one statement per row, as a naive loader does
            connection.execute(
                text(
                    "INSERT INTO events (event_id, customer_id, type, occurred_at, amount, currency) "
                    "VALUES (:e, :c, :t, :o, :a, :cur) ON CONFLICT (event_id) DO NOTHING"
                ),
                row,
            )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return len(rows), elapsed


def demo_payloads(count: int, batch: bool) -> list[dict[str, object]]:
    """API payloads from the synthetic generator."""
    end = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    out: list[dict[str, object]] = []
    for chunk in generate_demo(
        max(1, count // 15), 99 if batch else 98, start=end - dt.timedelta(days=700), end=end
    ):
        ev = chunk.events
        for i in range(len(ev)):
            body: dict[str, object] = {
                "event_id": ev.event_id[i],
                "customer_id": ev.customer_external_id[i],
                "type": ev.type[i],
                "occurred_at": (
                    dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
                    + dt.timedelta(microseconds=int(ev.occurred_at_us[i]))
                ).isoformat(),
            }
            if ev.amount_cents[i] >= 0:
                body |= {"amount": f"{ev.amount_cents[i] / 100:.2f}", "currency": "USD"}
            if ev.order_id[i]:
                body["order_id"] = ev.order_id[i]
            out.append(body)
            if len(out) >= count:
                return out
    return out


def loadgen(
    base: str,
    key: str,
    requests: list[dict[str, Any]],
    path: Path,
    connections: int,
    duration: float,
) -> dict[str, Any]:
    """Send `requests` (each once, in order) through bench.loadgen; events created per second."""
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        base,
        "--requests",
        str(path),
        "--once",
        "--connections",
        str(connections),
        "--duration",
        str(max(duration, 1.0)),
        "--warmup",
        "0",
        "--header",
        f"Authorization: Bearer {key}",
    ]
    summary: dict[str, Any] = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True).stdout
    )
    if summary["errors"] or set(summary["statuses"]) - {"200", "201"}:
        raise SystemExit(f"ingestion load failed: {summary}")
    events = sum(len(r["body"]["events"]) if "events" in r["body"] else 1 for r in requests)
    return {**summary, "events": events, "created_per_s": events / summary["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo-customers", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.add_argument("--api-events", type=int, default=60_000)
    args = parser.parse_args()
    lines: list[str] = []

    # 1. CDNOW through the real CLI path (parse + load), twice: the second is the idempotent re-import.
    with fresh_database() as url:
        engine = create_sync_engine(Settings(database_url=url))
        loader = BulkLoader(engine, "USD")
        t0 = time.perf_counter()
        first = sum(s.events_created for s in loader.load_all((c, None) for c in read_cdnow(CDNOW)))
        cdnow_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = sum(s.events_created for s in loader.load_all((c, None) for c in read_cdnow(CDNOW)))
        cdnow_again = time.perf_counter() - t0
        engine.dispose()
    if (first, again) != (69_659, 0):
        raise SystemExit(f"CDNOW import loaded {first} then {again} events; expected 69,659 then 0")

    # 2. Synthetic data at scale, generated up front so only loading is timed.
    end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    chunks = [
        (c.events, c.customers)
        for c in generate_demo(
            args.demo_customers,
            1,
            start=end - dt.timedelta(days=3 * 365),
            end=end,
            chunk_customers=10_000,
        )
    ]
    demo_events = sum(len(e) for e, _ in chunks)
    with fresh_database() as url:
        demo_created, demo_seconds = bulk_rate(url, chunks)
    with fresh_database() as url:
        one_created, one_seconds = bulk_rate(url, chunks[:5], workers=1)
    with fresh_database() as url:
        naive_rows, naive_seconds = naive_rate(url, chunks[0][0], args.naive_rows)
    bulk_per_s = demo_created / demo_seconds
    naive_per_s = naive_rows / naive_seconds

    lines += [
        "### Bulk import (`clv import-transactions`, `clv generate-demo` loading path)",
        "",
        "| What | Events | Seconds | Events/s |",
        "|---|---:|---:|---:|",
        f"| CDNOW, parse + load, empty database | {first:,} | {cdnow_first:.2f} | {first / cdnow_first:,.0f} |",
        f"| CDNOW again (idempotent re-import, 0 new) | 69,659 | {cdnow_again:.2f} | {69_659 / cdnow_again:,.0f} |",
        f"| Synthetic {args.demo_customers:,} customers, 2 loader connections | {demo_created:,} | {demo_seconds:.2f} | {bulk_per_s:,.0f} |",
        f"| Synthetic, first 50k customers, 1 connection | {one_created:,} | {one_seconds:.2f} | {one_created / one_seconds:,.0f} |",
        f"| **Baseline**: naive row-by-row INSERT ... ON CONFLICT | {naive_rows:,} | {naive_seconds:.2f} | {naive_per_s:,.0f} |",
        "",
        f"Bulk loader vs naive baseline: **{bulk_per_s / naive_per_s:.1f}x**. Target >= 100,000 events/s "
        f"at scale: {'met' if bulk_per_s >= 100_000 else 'NOT met'} ({bulk_per_s:,.0f}/s over {demo_events:,} events).",
        "",
    ]

    # 3. HTTP ingestion against a real uvicorn worker, driven by bench.loadgen in its own process.
    with fresh_database() as url:
        engine = create_sync_engine(Settings(database_url=url))
        with engine.begin() as connection:
            key = create_key(connection, "bench", ALL_SCOPES).secret
        engine.dispose()
        env = {"CLV_DATABASE_URL": url + "?sslmode=disable", "CLV_LOG_LEVEL": "warning"}
        with running_server(env) as base, tempfile.TemporaryDirectory() as work:
            batch_bodies = demo_payloads(args.api_events, batch=True)
            single_bodies = demo_payloads(args.api_events // 10, batch=False)
            batches = [
                {
                    "method": "POST",
                    "path": "/v1/events/batch",
                    "body": {"events": batch_bodies[i : i + 1000]},
                }
                for i in range(0, len(batch_bodies), 1000)
            ]
            singles = [{"method": "POST", "path": "/v1/events", "body": b} for b in single_bodies]
            # Each request is sent once (idempotency would turn repeats into cheap duplicates).
            batch_run = loadgen(
                base,
                key,
                batches,
                Path(work) / "batch.jsonl",
                connections=4,
                duration=len(batches) / 4,
            )
            single_run = loadgen(
                base, key, singles, Path(work) / "single.jsonl", connections=16, duration=5
            )
    batch_rate = batch_run["created_per_s"]
    single_rate = single_run["created_per_s"]
    lines += [
        "### HTTP ingestion (one uvicorn worker, Postgres, client in another process over loopback)",
        "",
        "| Endpoint | Events | Concurrency | Events/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        f"| `POST /v1/events/batch` (1,000 events/request) | {batch_run['events']:,} | 4 | {batch_rate:,.0f} | {batch_run['p50_ms']:.0f} | {batch_run['p99_ms']:.0f} |",
        f"| **Baseline**: `POST /v1/events` (one event/request) | {single_run['events']:,} | 16 | {single_rate:,.0f} | {single_run['p50_ms']:.1f} | {single_run['p99_ms']:.1f} |",
        "",
        f"Batch vs single-event ingestion: **{batch_rate / single_rate:.1f}x** events/s.",
    ]
    body = header("make bench  (python -m bench.ingest)") + "\n" + "\n".join(lines)
    print(body)
    write_section("ingestion", "## Ingestion\n\n" + body)


if __name__ == "__main__":
    main()
