"""Offline feature build at scale: 1M synthetic customers / ~20M events on Postgres.

Loads the synthetic data (timed separately), then runs the offline path `clv train` and `clv score`
use (`offline_features`, set-based SQL streamed in 50,000-customer chunks) and reports wall time
and peak memory of this process. Baseline in the same run: a single-customer online query
repeated, extrapolated (what a per-customer loop would cost).

    .venv/bin/python -m bench.features_scale [--customers 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import subprocess
import sys
import time

from sqlalchemy import func, select, text

from app.config import Settings
from app.db import create_async_db_engine, create_sync_engine
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader
from app.events.models import Event
from app.features.repository import FeatureRepository, offline_features
from bench.common import fresh_database, header, settle, write_section


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def per_customer_rate(url: str, ids: list[str], as_of: dt.datetime) -> float:
    """Customers/s of the online path called once per customer (the loop we avoid offline)."""
    engine = create_async_db_engine(Settings(database_url=url))
    async with engine.connect() as connection:
        repository = FeatureRepository(
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        )
        started = time.perf_counter()
        for customer in ids:
            await repository.for_customers([customer], as_of)
        elapsed = time.perf_counter() - started
    await engine.dispose()
    return len(ids) / elapsed


def build_only(url: str, as_of: str) -> None:
    """Child process: run the offline build and print customers, seconds and peak RSS as JSON."""
    engine = create_sync_engine(Settings(database_url=url))
    started = time.perf_counter()
    customers = sum(len(m) for m in offline_features(engine, dt.datetime.fromisoformat(as_of)))
    seconds = time.perf_counter() - started
    engine.dispose()
    print(json.dumps({"customers": customers, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--build-only", nargs=2, metavar=("URL", "AS_OF"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build_only(*args.build_only)
        return
    end = dt.datetime(2026, 6, 30, tzinfo=dt.UTC)
    with fresh_database("clv_bench_scale") as url:
        settings = Settings(database_url=url)
        engine = create_sync_engine(settings)
        loader = BulkLoader(engine, "USD")
        started = time.perf_counter()
        chunks = generate_demo(
            args.customers,
            2,
            start=end - dt.timedelta(days=3 * 365),
            end=end,
            chunk_customers=10_000,
        )
        loaded = sum(
            s.events_created for s in loader.load_all((c.events, c.customers) for c in chunks)
        )
        load_seconds = time.perf_counter() - started
        settle(engine)
        with engine.connect() as connection:
            events = connection.execute(select(func.count()).select_from(Event)).scalar_one()
            sample = [
                r[0]
                for r in connection.execute(
                    text("SELECT external_id FROM customers ORDER BY random() LIMIT 2000")
                )
            ]
        engine.dispose()
        # The build runs in a process of its own so its peak memory is its own.
        out = subprocess.run(
            [sys.executable, "-m", "bench.features_scale", "--build-only", url, end.isoformat()],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        build = json.loads(out.strip().splitlines()[-1])
        customers, build_seconds, rss_after = (
            build["customers"],
            build["seconds"],
            build["peak_rss_mib"],
        )
        online_rate = asyncio.run(per_customer_rate(url, sample, end))
    offline_rate = customers / build_seconds
    lines = [
        header(f"python -m bench.features_scale --customers {args.customers}"),
        f"Data: {args.customers:,} synthetic customers, {events:,} events, bulk-loaded in {load_seconds:.0f} s "
        f"({loaded / load_seconds:,.0f} events/s through `BulkLoader`, 2 connections), then `VACUUM (ANALYZE)`.",
        "",
        "| Path | Customers | Seconds | Customers/s |",
        "|---|---:|---:|---:|",
        f"| Offline features as of {end:%Y-%m-%d} (set-based SQL, 50k-customer chunks) | {customers:,} | {build_seconds:.1f} | {offline_rate:,.0f} |",
        f"| **Baseline**: online query once per customer (2,000 sampled, extrapolated) | {len(sample):,} | {len(sample) / online_rate:.1f} | {online_rate:,.0f} |",
        "",
        f"Offline build: **{build_seconds / 60:.1f} min** for {customers:,} customers (target < 3 min: "
        f"{'met' if build_seconds < 180 else 'NOT met'}); **{offline_rate / online_rate:.0f}x** the per-customer loop. "
        f"Peak RSS of the build process: **{rss_after:,.0f} MiB** (chunks are streamed, one held at a time).",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("features-scale", "## Offline features at scale\n\n" + body)


if __name__ == "__main__":
    main()
