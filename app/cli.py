"""The `clv` command: how people and containers drive the service."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from app.config import get_settings

#: Plain click help (rich_markup_mode=None): rich's tables cut long option names at 80 columns
#: and show a `<bool>` placeholder after flags, which take no value. Up to 120 columns wide.
HELP_SETTINGS = {"max_content_width": 120}

cli = typer.Typer(
    name="clv",
    help="clv-service: customer lifetime value and churn predictions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to REVISION instead.")] = False,
) -> None:
    """Apply the Alembic migrations to CLV_DATABASE_URL (alembic upgrade head)."""
    from app import schema

    settings = get_settings()
    (schema.downgrade if down else schema.upgrade)(revision, settings)
    typer.echo(f"database {_safe_url(settings.database_url)} is at {revision}")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [CLV_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [CLV_PORT].")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes [CLV_WORKERS].")
    ] = None,
    keepalive_timeout: Annotated[
        int | None,
        typer.Option(min=1, help="Seconds an idle keep-alive connection stays open."),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxies trusted for X-Forwarded-For/-Proto (IPs, CIDRs or *)."),
    ] = None,
    proxy_headers: Annotated[
        bool | None,
        typer.Option("--proxy-headers/--no-proxy-headers", help="Honour X-Forwarded-*."),
    ] = None,
    graceful_shutdown: Annotated[
        int | None,
        typer.Option(min=1, help="Seconds in-flight requests get to finish after SIGTERM."),
    ] = None,
    limit_concurrency: Annotated[
        int | None,
        typer.Option(min=0, help="Connections + requests per worker before 503 (0 = no limit)."),
    ] = None,
    backlog: Annotated[int | None, typer.Option(min=1, help="TCP listen backlog.")] = None,
) -> None:
    """Serve the HTTP API with uvicorn (refuses a database that is not migrated).

    Every option defaults to its CLV_* setting (CLV_HOST, CLV_PORT, CLV_WORKERS,
    CLV_KEEPALIVE_TIMEOUT_SECONDS, CLV_FORWARDED_ALLOW_IPS, CLV_PROXY_HEADERS,
    CLV_GRACEFUL_SHUTDOWN_SECONDS, CLV_LIMIT_CONCURRENCY, CLV_BACKLOG).
    """
    settings = get_settings()
    workers = workers or settings.workers
    # Before anything imports prometheus_client: it picks its storage from this at import time.
    owned_metrics_dir = _prepare_metrics_dir(workers)
    try:
        import uvicorn

        from app.db import create_sync_engine
        from app.observability.logs import logging_config
        from app.schema import SchemaNotAtHead, check_at_head

        engine = create_sync_engine(settings)
        try:
            with engine.connect() as connection:
                check_at_head(connection)
        except SchemaNotAtHead as exc:
            raise _fail(str(exc)) from exc
        finally:
            engine.dispose()
        limit = settings.limit_concurrency if limit_concurrency is None else limit_concurrency
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host or settings.host,
            port=settings.port if port is None else port,
            workers=workers,
            # httptools plus a head deadline/size bound and a problem+json 503; a subclass of
            # uvicorn internals, pinned and tested (docs/limits.md says why no setting does it).
            http="app.limits:GuardedHttpToolsProtocol",
            log_config=logging_config(settings.log_level),
            log_level=settings.log_level,
            access_log=False,  # app.observability writes one JSON line per request instead
            proxy_headers=settings.proxy_headers if proxy_headers is None else proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips or settings.forwarded_allow_ips,
            timeout_keep_alive=keepalive_timeout or settings.keepalive_timeout_seconds,
            timeout_graceful_shutdown=graceful_shutdown or settings.graceful_shutdown_seconds,
            limit_concurrency=limit or None,
            backlog=backlog or settings.backlog,
            # uvicorn's 5 s default is shorter than a worker's start (imports, model warm-up), so
            # SIGHUP's rolling restart would give up and keep the old workers.
            timeout_worker_healthcheck=settings.worker_healthcheck_seconds,
            server_header=False,
        )
    finally:
        if owned_metrics_dir is not None:
            shutil.rmtree(owned_metrics_dir, ignore_errors=True)


def _prepare_metrics_dir(workers: int) -> str | None:
    """Multiprocess metrics for several workers: the shared directory, emptied of earlier runs.

    Returns the directory when it is a temporary one this process made (and removes afterwards).
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    owned = None
    if not directory:
        if workers == 1:
            return None  # one process: plain in-memory metrics
        directory = owned = tempfile.mkdtemp(prefix="clv-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # inherited by the workers
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):  # samples of an earlier run would be added to this one's
            os.remove(os.path.join(directory, name))
    return owned


class LogFormat(StrEnum):
    cdnow = "cdnow"
    csv = "csv"


@cli.command("import-transactions")
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
        raise _fail(f"{exc} (nothing was imported)") from exc
    if conflicts:
        engine.dispose()
        for line in conflicts[:20]:
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        more = f" ({len(conflicts) - 20} more not shown)" if len(conflicts) > 20 else ""
        raise _fail(f"{len(conflicts)} conflicting line(s){more}; nothing was imported")
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
        raise _fail(f"{exc}; {done.events_created} events of earlier chunks were imported") from exc
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - started
    typer.echo(
        f"imported {done.events_created} new events ({done.events_skipped} already stored), "
        f"{done.customers_created} new customers, in {elapsed:.2f} s "
        f"({done.events_seen / max(elapsed, 1e-9):,.0f} events/s)"
    )


@cli.command("generate-demo")
def generate_demo(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (ids include it).")] = 7,
    years: Annotated[float, typer.Option(min=0.1, help="History length, ending now.")] = 3.0,
    if_empty: Annotated[
        bool,
        typer.Option("--if-empty/--no-if-empty", help="Do nothing if events exist already."),
    ] = False,
) -> None:
    """Generate and load synthetic, realistic event streams (orders, refunds, sessions, carts...)."""
    from app.db import create_sync_engine
    from app.demo.generator import generate_demo as generate
    from app.events.bulk import BulkLoader
    from app.events.repository import any_events

    settings = get_settings()
    engine = create_sync_engine(settings)
    if if_empty:
        with engine.connect() as connection:
            if any_events(connection):
                typer.echo("events exist already; no demo data loaded")
                engine.dispose()
                return
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    start = end - dt.timedelta(days=round(365.25 * years))
    loader = BulkLoader(engine, settings.currency)
    created = seen = made_customers = 0
    started = time.perf_counter()
    with tqdm(
        total=customers, unit="cust", desc="generating", file=sys.stderr, disable=None
    ) as bar:
        batches = generate(customers, seed, start=start, end=end, chunk_customers=10_000)
        for stats in loader.load_all((chunk.events, chunk.customers) for chunk in batches):
            created += stats.events_created
            seen += stats.events_seen
            made_customers += stats.customers_created
            bar.update(stats.customers_seen)
    engine.dispose()
    typer.echo(
        f"demo data: {made_customers} new customers, {created} new events "
        f"({seen - created} already stored) in {time.perf_counter() - started:.1f} s"
    )


def _as_of(value: str) -> dt.datetime:
    from app.features.definitions import parse_as_of

    try:
        return parse_as_of(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r}: {exc}; give YYYY-MM-DD or an RFC 3339 instant with offset",
            param_hint="'--as-of'",
        ) from exc


@cli.command("data-quality")
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
                connection, settings, _as_of(as_of) if as_of else dt.datetime.now(dt.UTC)
            )
    finally:
        engine.dispose()
    typer.echo(report.model_dump_json(indent=2) if json_output else "\n".join(report_lines(report)))


class SplitMethod(StrEnum):
    hash = "hash"
    protocol_a = "protocol-a"


@cli.command()
def train(
    as_of: Annotated[
        str,
        typer.Option(
            "--as-of", help="Training instant T (YYYY-MM-DD = end of that UTC day). Default: now."
        ),
    ] = "",
    clv_horizon_days: Annotated[int, typer.Option(min=1, help="CLV horizon H1 (days).")] = 365,
    churn_horizon_days: Annotated[int, typer.Option(min=1, help="Churn horizon H2 (days).")] = 90,
    propensity_days: Annotated[
        int, typer.Option(min=1, help="Window of the order probability (days).")
    ] = 30,
    out: Annotated[
        Path | None, typer.Option(help="Model directory (default CLV_MODEL_DIR).")
    ] = None,
    holdout: Annotated[
        float, typer.Option(min=0.01, max=0.9, help="Holdout share of customers.")
    ] = 0.2,
    split: Annotated[
        SplitMethod, typer.Option(help="hash, or protocol-a (PROTOCOL.md test half).")
    ] = SplitMethod.hash,
    stack: Annotated[
        int,
        typer.Option(min=1, help="Stacked cutoffs per target, spread over the history (1 = none)."),
    ] = 8,
    stack_step_days: Annotated[
        int, typer.Option(min=1, help="Least days between stacked cutoffs.")
    ] = 30,
    seed: Annotated[int, typer.Option(help="Seed for boosting and the validation slice.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if worse than current.")
    ] = False,
    no_baselines: Annotated[
        bool, typer.Option("--no-baselines", help="Skip BG/NBD (faster).")
    ] = False,
    challengers: Annotated[
        bool,
        typer.Option(
            "--challengers",
            help="Also train ridge/logistic and MLP challengers (docs/challengers.md); "
            "per target the best out of time serves.",
        ),
    ] = False,
) -> None:
    """Train CLV + churn models from the event history, export ONNX, evaluate, promote if not worse."""
    from app.db import create_sync_engine
    from app.training.train import TrainingFailed, TrainOptions
    from app.training.train import train as run_training

    settings = get_settings()
    options = TrainOptions(
        as_of=_as_of(as_of) if as_of else dt.datetime.now(dt.UTC),
        model_dir=out or settings.model_dir,
        clv_horizon_days=clv_horizon_days,
        churn_horizon_days=churn_horizon_days,
        propensity_days=propensity_days,
        holdout_fraction=holdout,
        split=split.value,
        stack=stack,
        stack_step_days=stack_step_days,
        seed=seed,
        force=force,
        baselines=not no_baselines,
        currency=settings.currency,
        challengers=challengers,
    )
    engine = create_sync_engine(settings)
    from app.quality.service import summary_lines  # data-quality summary, warnings on stderr

    for line in summary_lines(engine, options.as_of, settings):
        typer.secho(line, err=line.startswith("warning"), fg="yellow" if line[0] == "w" else None)
    try:
        result = run_training(engine, options)
    except TrainingFailed as exc:
        raise _fail(str(exc)) from exc
    finally:
        engine.dispose()
    from app.training.reporting import metrics_table

    typer.echo(f"artifact {result.directory}  (report: {result.directory / 'report.html'})")
    typer.echo(metrics_table(result.manifest))
    typer.echo(result.reason)
    if not result.promoted:
        raise typer.Exit(code=3)


@cli.command()
def score(
    out: Annotated[Path | None, typer.Option(help="Output file: .csv or .parquet.")] = None,
    as_of: Annotated[
        str, typer.Option("--as-of", help="Score as of T (YYYY-MM-DD = end of day). Default: now.")
    ] = "",
    store: Annotated[
        bool,
        typer.Option("--store/--no-store", help="Also store the run (feeds /v1/segments)."),
    ] = False,
    model_dir: Annotated[
        Path | None, typer.Option(help="Model directory (default CLV_MODEL_DIR).")
    ] = None,
) -> None:
    """Score every customer as of T with the current model: CSV/Parquet and/or a stored run."""
    from app.alerts.service import ScoreRunRecorder
    from app.artifacts import current_directory
    from app.db import create_sync_engine
    from app.scoring.batch import score_all
    from app.scoring.registry import load_model

    moment = _as_of(as_of) if as_of else dt.datetime.now(dt.UTC)
    if out is None and not store:
        raise _fail("nothing to do: give --out FILE and/or --store")
    if out is not None and out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise _fail(f"{out}: the output must end in .csv or .parquet")
    settings = get_settings()
    directory = current_directory(model_dir or settings.model_dir)
    if directory is None:
        raise _fail(
            f"no model: {(model_dir or settings.model_dir) / 'current'} does not exist; run `clv train`"
        )
    try:
        model = load_model(directory, threads=settings.onnx_threads, currency=settings.currency)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    engine = create_sync_engine(settings)
    try:
        result = score_all(
            engine,
            model,
            settings,
            moment,
            out,
            store,
            on_stored=ScoreRunRecorder(settings, model.version, moment, "score_run"),
        )
    finally:
        engine.dispose()
    where = [str(result.path)] if result.path else []
    if result.run_id is not None:
        where.append(f"stored run {result.run_id}")
    typer.echo(
        f"scored {result.customers:,} customers with model {result.model_version} in {result.seconds:.1f} s "
        f"({result.customers / max(result.seconds, 1e-9):,.0f}/s) -> {', '.join(where)}"
    )


@cli.command()
def backtest(
    last_origin: Annotated[
        str,
        typer.Option("--last-origin", help="The latest origin (YYYY-MM-DD = end of that UTC day)."),
    ],
    origins: Annotated[int, typer.Option(min=1, help="How many origins.")] = 4,
    step_days: Annotated[int, typer.Option(min=1, help="Days between origins.")] = 30,
    clv_horizon_days: Annotated[int, typer.Option(min=1, help="CLV horizon H1 (days).")] = 365,
    churn_horizon_days: Annotated[int, typer.Option(min=1, help="Churn horizon H2 (days).")] = 90,
    propensity_days: Annotated[
        int, typer.Option(min=1, help="Window of the order probability (days).")
    ] = 30,
    seed: Annotated[int, typer.Option(help="Training seed at every origin.")] = 0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Training threads (default: all cores).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full result as JSON here.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML page here.")
    ] = None,
    no_bg_nbd: Annotated[
        bool, typer.Option("--no-bg-nbd", help="Skip the BG/NBD + Gamma-Gamma baseline.")
    ] = False,
    challengers: Annotated[
        bool,
        typer.Option(
            "--challengers", help="Also train and show the ridge/logistic and MLP challengers."
        ),
    ] = False,
    allow_partial_window: Annotated[
        bool,
        typer.Option(
            "--allow-partial-window", help="Allow label windows past the last stored order."
        ),
    ] = False,
) -> None:
    """Rolling-origin out-of-time backtest: train at each origin, score the next H days, vs baselines."""
    import json

    from app.db import create_sync_engine
    from app.training.backtest import (
        BacktestError,
        BacktestOptions,
        origin_table,
        run_backtest,
        text_table,
        write_html,
    )

    settings = get_settings()
    options = BacktestOptions(
        last_origin=_as_of(last_origin),
        origins=origins,
        step_days=step_days,
        clv_horizon_days=clv_horizon_days,
        churn_horizon_days=churn_horizon_days,
        propensity_days=propensity_days,
        seed=seed,
        threads=threads or os.cpu_count() or 1,
        currency=settings.currency,
        bg_nbd=not no_bg_nbd,
        challengers=challengers,
        allow_partial_window=allow_partial_window,
    )
    engine = create_sync_engine(settings)
    try:
        result = run_backtest(
            engine,
            options,
            on_origin=lambda entry: typer.echo("\n".join(origin_table(entry)), err=True),
        )
    except BacktestError as exc:
        raise _fail(str(exc)) from exc
    finally:
        engine.dispose()
    typer.echo(text_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        typer.echo(f"JSON: {json_out}")
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        write_html(html_out, result)
        typer.echo(f"HTML: {html_out}")


@cli.command()
def reproduce(
    directory: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="An artifact, e.g. models/<version>."),
    ],
    threads: Annotated[
        int | None, typer.Option(min=1, help="Retrain with this many threads instead.")
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Also accept differing bytes when every prediction is within this."
        ),
    ] = None,
) -> None:
    """Retrain a model from its manifest on this database; exit 1 unless the result is the same."""
    from app.db import create_sync_engine
    from app.training.reproduce import ReproduceError
    from app.training.reproduce import reproduce as run_reproduce
    from app.training.train import TrainingFailed

    engine = create_sync_engine(get_settings())
    try:
        report = run_reproduce(engine, directory, threads=threads)
    except (ReproduceError, TrainingFailed) as exc:
        raise _fail(str(exc)) from exc
    finally:
        engine.dispose()
    typer.echo(f"retrained {directory} with {report.options}")
    for check in report.files:
        state = "identical" if check.identical else "DIFFERENT"
        typer.echo(
            f"  {check.name:<11} {state:<9} original {check.expected[:16]}  retrained {check.actual[:16]}"
        )
    if report.data_same is None:
        typer.echo("  data: not recorded in the manifest")
    else:
        typer.echo(f"  data: {'the same' if report.data_same else 'DIFFERENT'}")
    for line in report.data_differences:
        typer.echo(f"    {line}")
    if report.max_clv_diff is not None:
        typer.echo(
            f"  predictions for {report.rows_compared:,} customers: max |CLV diff| "
            f"{report.max_clv_diff:.3g}, max |churn diff| {report.max_churn_diff:.3g}"
        )
    for line in report.notes + [f"ignored option {o}" for o in report.ignored_options]:
        typer.echo(f"  {line}")
    if report.identical:
        typer.echo("reproduced: bit-identical clv.onnx and churn.onnx")
    elif report.matches(tolerance):
        typer.echo(f"reproduced within {tolerance}: bytes differ, every prediction agrees")
    else:
        typer.echo("NOT reproduced: the retrained model differs")
        raise typer.Exit(code=1)


@cli.command()
def rescore(
    as_of: Annotated[
        str, typer.Option("--as-of", help="Score as of T (YYYY-MM-DD = end of day). Default: now.")
    ] = "",
    model_dir: Annotated[
        Path | None, typer.Option(help="Model directory (default CLV_MODEL_DIR).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Rescore every customer (a stored run) and emit alerts for changes: silent churners go at_risk.

    Meant for a nightly cron line or a compose service; safe to run once by hand.
    """
    from app.alerts.service import ScoreRunRecorder
    from app.artifacts import current_directory
    from app.db import create_sync_engine
    from app.scoring.batch import score_all
    from app.scoring.registry import load_model

    settings = get_settings()
    directory = current_directory(model_dir or settings.model_dir)
    if directory is None:
        raise _fail(
            f"no model: {(model_dir or settings.model_dir) / 'current'} does not exist; run `clv train`"
        )
    try:
        model = load_model(directory, threads=settings.onnx_threads)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    instant = _as_of(as_of) if as_of else dt.datetime.now(dt.UTC)
    engine = create_sync_engine(settings)
    try:
        recorder = ScoreRunRecorder(settings, model.version, instant, "rescore")
        result = score_all(
            engine, model, settings, instant, None, True, progress=progress, on_stored=recorder
        )
    finally:
        engine.dispose()
    typer.echo(
        f"rescored {result.customers:,} customers as of {instant.isoformat()} with model "
        f"{result.model_version} in {result.seconds:.1f} s -> stored run {result.run_id}, "
        f"{recorder.alerts:,} alerts"
    )


@cli.command()
def deliver() -> None:
    """Run the webhook deliverer alone (set CLV_WEBHOOKS_DELIVER_IN_SERVE=false on `clv serve`)."""
    import asyncio
    import logging.config
    import signal

    from app.observability.logs import logging_config
    from app.webhooks.deliverer import run_forever

    settings = get_settings()
    logging.config.dictConfig(logging_config(settings.log_level))

    async def deliver_until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)  # in-flight sends finish, then exit
        await run_forever(settings, stop)

    asyncio.run(deliver_until_signalled())


def _rates(pairs: list[str], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError as exc:
            raise typer.BadParameter(f"{option} takes NAME=RATE, got {pair!r}") from exc
    return out


@cli.command()
def plan(
    budget: Annotated[float, typer.Option(min=0, help="Money to spend on contacts.")],
    cost: Annotated[float, typer.Option(min=0.0, help="Cost of one contact.")],
    save_rate: Annotated[
        float | None, typer.Option(min=0, max=1, help="Save rate for every customer.")
    ] = None,
    save_rate_stage: Annotated[
        list[str] | None, typer.Option(help="STAGE=RATE, e.g. at_risk=0.2 (repeatable).")
    ] = None,
    save_rate_tier: Annotated[
        list[str] | None, typer.Option(help="TIER=RATE, e.g. top=0.15 (repeatable).")
    ] = None,
    stage: Annotated[list[str] | None, typer.Option(help="Only this stage (repeatable).")] = None,
    tier: Annotated[list[str] | None, typer.Option(help="Only this tier (repeatable).")] = None,
    max_contacts: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    out: Annotated[Path | None, typer.Option(help="CSV file (default: standard output).")] = None,
) -> None:
    """Plan a retention campaign: customers ranked by expected net gain within the budget, as CSV.

    gain = churn probability x save rate x CLV - cost, from each customer's latest stored scores
    (run `clv rescore` first). Expected value under the save rate you give, not measured uplift.
    """
    import csv

    from pydantic import ValidationError

    from app.campaigns.schemas import CampaignPlanIn
    from app.campaigns.service import plan_campaign_sync
    from app.db import create_sync_engine
    from app.errors import InvalidInput

    try:
        request = CampaignPlanIn.model_validate(
            {
                "budget": budget,
                "cost_per_contact": cost,
                "save_rate": save_rate,
                "save_rate_by_stage": _rates(save_rate_stage or [], "--save-rate-stage") or None,
                "save_rate_by_tier": _rates(save_rate_tier or [], "--save-rate-tier") or None,
                "stages": stage or None,
                "tiers": tier or None,
                "max_contacts": max_contacts,
            }
        )
    except ValidationError as exc:
        raise _fail(str(exc)) from exc
    settings = get_settings()
    engine = create_sync_engine(settings)
    try:
        with engine.connect() as connection:
            result = plan_campaign_sync(connection, request, settings.currency)
    except InvalidInput as exc:
        raise _fail(exc.detail or "invalid input") from exc
    finally:
        engine.dispose()
    columns = [
        "rank",
        "customer_id",
        "clv",
        "churn_probability",
        "lifecycle_stage",
        "value_tier",
        "save_rate",
        "expected_retained_revenue",
        "expected_net_gain",
        "cumulative_spend",
    ]
    sink = out.open("w", newline="") if out else sys.stdout
    try:
        writer = csv.writer(sink)
        writer.writerow(columns)
        for c in result.contacts:
            writer.writerow([getattr(c, name) for name in columns])
    finally:
        if out:
            sink.close()
    t = result.totals
    roi = "n/a" if t.roi is None else f"{t.roi:.2f}"
    typer.echo(
        f"{t.contacts:,} contacts, spend {t.spend:,.2f} {result.currency}, expected retained "
        f"revenue {t.expected_retained_revenue:,.2f}, expected net gain "
        f"{t.expected_net_gain:,.2f}, ROI {roi} (stopped by {t.stopped_by})",
        err=True,
    )


keys_cli = typer.Typer(
    help="API keys: create (shown once), list, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in listings).")],
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: events:write, predictions:read, customers:erase, admin, "
            "webhooks:admin, or all.",
        ),
    ],
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from app.auth.keys import parse_scopes
    from app.auth.repository import create_key
    from app.db import create_sync_engine

    try:
        wanted = parse_scopes(scopes)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if not 0 < len(name) <= 64:
        raise _fail("--name must be 1-64 characters")
    engine = create_sync_engine(get_settings())
    with engine.begin() as connection:
        key = create_key(connection, name, wanted)
    engine.dispose()
    typer.echo(key.secret)
    typer.echo(
        f"key {key.prefix} ({name}) with scopes {', '.join(sorted(s.value for s in wanted))}; "
        "store it now, it is not shown again",
        err=True,
    )


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (prefix, name, scopes, created, revoked); secrets are never shown."""
    from app.auth.repository import list_keys
    from app.db import create_sync_engine

    engine = create_sync_engine(get_settings())
    with engine.connect() as connection:
        keys = list_keys(connection)
    engine.dispose()
    typer.echo(f"{'prefix':<12} {'name':<24} {'created':<20} {'revoked':<20} scopes")
    for key in keys:
        revoked = f"{key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "-"
        typer.echo(
            f"{key.prefix:<12} {key.name:<24} {key.created_at:%Y-%m-%d %H:%M:%S}  {revoked:<20} {key.scopes}"
        )


@keys_cli.command("revoke")
def keys_revoke(
    key: Annotated[
        str, typer.Argument(help="The key's prefix (from `clv keys list`) or its name.")
    ],
) -> None:
    """Revoke a key; every worker refuses it from the next request on."""
    from app.auth.repository import revoke_keys
    from app.db import create_sync_engine

    engine = create_sync_engine(get_settings())
    with engine.begin() as connection:
        count = revoke_keys(connection, key)
    engine.dispose()
    if not count:
        raise _fail(f"no active key with prefix or name {key!r}")
    typer.echo(f"revoked {count} key(s)")


@keys_cli.command("ensure-local")
def keys_ensure_local(
    file: Annotated[
        Path, typer.Option(help="Where the local development key is kept (mode 600).")
    ] = Path("var/local-api-key"),
) -> None:
    """For `make run`: reuse the key in FILE if it is still valid, else create one with every scope."""
    from app.auth.keys import ALL_SCOPES
    from app.auth.repository import create_key, is_active_key
    from app.db import create_sync_engine

    engine = create_sync_engine(get_settings())
    secret = file.read_text().strip() if file.exists() else ""
    with engine.begin() as connection:
        if not is_active_key(connection, secret):
            secret = create_key(connection, "local-dev", ALL_SCOPES).secret
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(secret + "\n")
            file.chmod(0o600)
    engine.dispose()
    typer.echo(secret)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
