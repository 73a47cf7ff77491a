"""`clv import-transactions`, `clv generate-demo`, `clv data-quality`: the events the models learn from."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from app.cli.common import fail, parse_instant
from app.config import get_settings


class LogFormat(StrEnum):
    cdnow = "cdnow"
    csv = "csv"


def import_transactions(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The transaction log.")],
    format: Annotated[LogFormat, typer.Option("--format", help="cdnow or csv.")] = LogFormat.csv,
) -> None:
    """Bulk-load a transaction log as order events (idempotent: a re-import adds nothing)."""
    from app.db import create_sync_engine
    from app.events.bulk import BulkConflict, BulkLoader, EventColumns, LoadStats
    from app.events.transactions import TransactionLogError, read_cdnow, read_csv

    settings = get_settings()

    def chunks() -> Iterator[EventColumns]:
        if format is LogFormat.cdnow:
            return read_cdnow(path)
        return read_csv(path, settings.currency)

    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, settings.currency)
    conflicts: list[str] = []
    try:
        # Validates every line, and finds ids stored with other content, before storing anything.
        total = 0
        for columns in chunks():
            total += len(columns)
            conflicts += [
                f"{path}:{columns.line(i)}: event_id {columns.event_id[i]!r} is already stored "
                "with different content; event ids are idempotency keys and cannot be reused"
                for i in loader.conflicts(columns)
            ]
    except TransactionLogError as exc:
        engine.dispose()
        raise fail(f"{exc} (nothing was imported)") from exc
    if conflicts:
        engine.dispose()
        for line in conflicts[:20]:
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        more = f" ({len(conflicts) - 20} more not shown)" if len(conflicts) > 20 else ""
        raise fail(f"{len(conflicts)} conflicting line(s){more}; nothing was imported")
    done = LoadStats()
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="ev", desc="importing", file=sys.stderr, disable=None) as bar:
            for stats in loader.load_all((columns, None) for columns in chunks()):
                done.events_seen += stats.events_seen
                done.events_created += stats.events_created
                done.customers_created += stats.customers_created
                bar.update(stats.events_seen)
    except BulkConflict as exc:  # written by another client since the check: that chunk is undone
        raise fail(f"{exc}; {done.events_created} events of earlier chunks were imported") from exc
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - started
    typer.echo(
        f"imported {done.events_created} new events ({done.events_skipped} already stored), "
        f"{done.customers_created} new customers, in {elapsed:.2f} s "
        f"({done.events_seen / max(elapsed, 1e-9):,.0f} events/s)"
    )


def generate_demo(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (ids include it).")] = 7,
    years: Annotated[float, typer.Option(min=0.1, help="History length, ending at --end.")] = 3.0,
    end: Annotated[
        str,
        typer.Option(
            "--end",
            help="Last instant of the history (YYYY-MM-DD = end of that UTC day). Default: a "
            "minute ago. The same --seed, --end, --years and --customers give the same events.",
        ),
    ] = "",
    if_empty: Annotated[
        bool,
        typer.Option("--if-empty/--no-if-empty", help="Do nothing if events exist already."),
    ] = False,
) -> None:
    """Generate and load synthetic, realistic event streams (orders, refunds, sessions, carts...)."""
    from app.db import create_sync_engine
    from app.demo.generator import generate_demo as generate
    from app.events.bulk import BulkConflict, BulkLoader
    from app.events.repository import any_events

    last = (
        parse_instant(end, "--end")
        if end
        else dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    )
    settings = get_settings()
    engine = create_sync_engine(settings)
    if if_empty:
        with engine.connect() as connection:
            if any_events(connection):
                typer.echo("events exist already; no demo data loaded")
                engine.dispose()
                return
    start = last - dt.timedelta(days=round(365.25 * years))
    loader = BulkLoader(engine, settings.currency)
    created = seen = made_customers = 0
    started = time.perf_counter()
    try:
        with tqdm(
            total=customers, unit="cust", desc="generating", file=sys.stderr, disable=None
        ) as bar:
            batches = generate(customers, seed, start=start, end=last, chunk_customers=10_000)
            for stats in loader.load_all((chunk.events, chunk.customers) for chunk in batches):
                created += stats.events_created
                seen += stats.events_seen
                made_customers += stats.customers_created
                bar.update(stats.customers_seen)
    except BulkConflict as exc:
        # Event ids are the seed's; their timestamps come from --end (default: now).
        raise fail(
            f"demo events of seed {seed} are already stored with other content ({exc}): they "
            f"were generated for another --end or --years (the default --end is now). Pass "
            f"another --seed for more demo data, the same --end to load the same data again, "
            f"or --if-empty to keep what is stored; {created} events of earlier chunks were loaded"
        ) from exc
    finally:
        engine.dispose()
    typer.echo(
        f"demo data: {made_customers} new customers, {created} new events "
        f"({seen - created} already stored) in {time.perf_counter() - started:.1f} s"
    )


def data_quality(
    as_of: Annotated[
        str, typer.Option("--as-of", help="Events up to T (YYYY-MM-DD = end of day). Default: now.")
    ] = "",
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report data-quality issues of the stored events: counts, shares and a few examples."""
    from app.db import create_sync_engine
    from app.quality.service import build_report, report_lines

    settings = get_settings()
    engine = create_sync_engine(settings)
    try:
        with engine.connect() as connection:
            report = build_report(
                connection, settings, parse_instant(as_of) if as_of else dt.datetime.now(dt.UTC)
            )
    finally:
        engine.dispose()
    typer.echo(report.model_dump_json(indent=2) if json_output else "\n".join(report_lines(report)))
