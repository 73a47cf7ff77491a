"""The online feature read before and after daily rollups, in one run on one database.

Loads synthetic customers plus the heavy customer of `bench.scoring` (10,000 events over three
years), then times the statement the scoring hot path runs (asyncpg, prepared) in both forms,
interleaved: the raw-event query every customer read before issue 13, and the rollup-backed
one (`asyncpg_statement`). Also EXPLAIN (ANALYZE) of both for the heavy customer, and a check
that both return the same row.

    .venv/bin/python -m bench.hot_path [--customers 20000] [--rounds 400]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from app.config import Settings
from app.db import create_sync_engine
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader
from app.features.repository import aggregate_statement, asyncpg_statement, rollup_params
from bench.common import fresh_database, header, settle
from bench.scoring import HEAVY, heavy_customer


def _raw_statement() -> tuple[str, tuple[str, ...]]:
    compiled = aggregate_statement("postgresql", "one").compile(dialect=PGDialect_asyncpg())  # type: ignore[no-untyped-call]
    assert compiled.positiontup is not None
    return str(compiled), tuple(compiled.positiontup)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, light: list[str], rounds: int) -> dict[str, Any]:
    """Per-statement latencies (ms) for the heavy and light customers, and EXPLAIN timings."""
    connection = await asyncpg.connect(url.replace("postgresql+psycopg", "postgresql"))
    statements = {"raw": _raw_statement(), "rollups": asyncpg_statement("one")}
    prepared = {name: await connection.prepare(sql) for name, (sql, _) in statements.items()}
    as_of = dt.datetime.now(dt.UTC)
    times: dict[tuple[str, str], list[float]] = {}
    for k in range(rounds + 20):
        for name, (_, order) in statements.items():
            for who, customer in (("heavy", HEAVY), ("light", light[k % len(light)])):
                params = {**rollup_params(as_of), "external_id": customer}
                started = time.perf_counter()
                await prepared[name].fetch(*(params[p] for p in order))
                if k >= 20:  # warm-up
                    times.setdefault((name, who), []).append((time.perf_counter() - started) * 1000)
    params = {**rollup_params(as_of), "external_id": HEAVY}
    rows = {}
    explain: dict[str, str] = {}
    for name, (sql, order) in statements.items():
        rows[name] = await connection.fetch(sql, *(params[p] for p in order))
        plan = await connection.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + sql, *(params[p] for p in order)
        )
        lines = [r[0] for r in plan]
        explain[name] = next(line for line in reversed(lines) if "Execution Time" in line)
        print(f"--- {name}\n" + "\n".join(lines), file=sys.stderr)
    await connection.close()
    assert [tuple(r) for r in rows["raw"]] == [tuple(r) for r in rows["rollups"]], "rows differ"
    summary: dict[str, Any] = {"explain": explain}
    for (name, who), values in times.items():
        summary[f"{name}/{who}"] = {
            "p50": statistics.median(values),
            "p99": _pct(values, 0.99),
            "n": len(values),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    with fresh_database("i13_hot_path") as url:
        engine = create_sync_engine(Settings(database_url=url))
        loader = BulkLoader(engine, "USD")
        chunks = generate_demo(
            args.customers,
            1,
            start=end - dt.timedelta(days=3 * 365),
            end=end,
            chunk_customers=10_000,
        )
        for chunk in chunks:
            loader.load(chunk.events, chunk.customers)
        loader.load(heavy_customer(end))
        settle(engine)
        from sqlalchemy import text

        with engine.connect() as connection:
            light = [
                str(r[0])
                for r in connection.execute(
                    text("SELECT external_id FROM customers ORDER BY random() LIMIT 500")
                )
            ]
            counts = connection.execute(
                text(
                    "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM daily_rollups), "
                    "(SELECT count(*) FROM daily_rollups r JOIN customers c ON c.id = r.customer_id "
                    "WHERE c.external_id = :h)"
                ),
                {"h": HEAVY},
            ).one()
        engine.dispose()
        result = asyncio.run(measure(url, light, args.rounds))
    print(result, file=sys.stderr)
    rows = [
        header(f"python -m bench.hot_path --customers {args.customers} --rounds {args.rounds}"),
        f"Data: {args.customers:,} synthetic customers + the heavy customer (10,000 events, "
        f"{counts[2]:,} rollup rows); {counts[0]:,} events, {counts[1]:,} rollup rows. "
        "Timed: the feature statement alone through asyncpg (prepared), interleaved, same connection.",
        "",
        "| Statement | Heavy p50 ms | Heavy p99 ms | Light p50 ms | Light p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("raw", "rollups"):
        h, li = result[f"{name}/heavy"], result[f"{name}/light"]
        rows.append(
            f"| {name} | {h['p50']:.2f} | {h['p99']:.2f} | {li['p50']:.2f} | {li['p99']:.2f} |"
        )
    rows += [
        "",
        f"EXPLAIN ANALYZE, heavy customer: raw `{result['explain']['raw']}`, "
        f"rollups `{result['explain']['rollups']}`.",
    ]
    print("\n".join(rows))


if __name__ == "__main__":
    main()
