"""`clv train`, `clv score`, `clv backtest`, `clv reproduce`: models and batch predictions."""

from __future__ import annotations

import datetime as dt
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import current_model, fail, parse_instant
from app.config import get_settings


class SplitMethod(StrEnum):
    hash = "hash"
    protocol_a = "protocol-a"


#: `--dask` of train, score and backtest (docs/dask.md).
DaskSpec = Annotated[
    str | None,
    typer.Option(
        "--dask",
        help="Run on Dask: local (2 workers), local:N or tcp://scheduler:8786 (docs/dask.md).",
    ),
]


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
    baseline_penalizer: Annotated[
        float,
        typer.Option(
            min=0.0, help="Penalizer of the BG/NBD + GG comparison (PROTOCOL.md fits with 0)."
        ),
    ] = 0.0,
    challengers: Annotated[
        bool,
        typer.Option(
            "--challengers",
            help="Also train ridge/logistic and MLP challengers (docs/challengers.md); "
            "per target the best out of time serves.",
        ),
    ] = False,
    dask: DaskSpec = None,
) -> None:
    """Train CLV + churn models from the event history, export ONNX, evaluate, promote if not worse."""
    from app.db import create_sync_engine
    from app.distributed.cluster import DaskUnavailable
    from app.training.options import TrainingFailed, TrainOptions
    from app.training.train import train as run_training

    if dask is not None and challengers:
        raise fail("--challengers is single-node only: drop it or --dask")
    settings = get_settings()
    options = TrainOptions(
        as_of=parse_instant(as_of) if as_of else dt.datetime.now(dt.UTC),
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
        baseline_penalizer=baseline_penalizer,
        currency=settings.currency,
        challengers=challengers,
    )
    engine = create_sync_engine(settings)
    from app.quality.service import summary_lines  # data-quality summary, warnings on stderr

    for line in summary_lines(engine, options.as_of, settings):
        typer.secho(line, err=line.startswith("warning"), fg="yellow" if line[0] == "w" else None)
    try:
        if dask is None:
            result = run_training(engine, options)
        else:
            from app.distributed import commands

            result = commands.train(dask, engine, options)
    except (TrainingFailed, DaskUnavailable) as exc:
        raise fail(str(exc)) from exc
    finally:
        engine.dispose()
    from app.training.reporting import metrics_table

    typer.echo(f"artifact {result.directory}  (report: {result.directory / 'report.html'})")
    typer.echo(metrics_table(result.manifest))
    typer.echo(result.reason)
    if not result.promoted:
        raise typer.Exit(code=3)


def score(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output file: .csv or .parquet (with --dask also DIR: Parquet partitions)."
        ),
    ] = None,
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
    dask: DaskSpec = None,
) -> None:
    """Score every customer as of T with the current model: CSV/Parquet and/or a stored run."""
    from app.alerts.service import ScoreRunRecorder
    from app.db import create_sync_engine
    from app.distributed.cluster import DaskUnavailable
    from app.scoring.batch import score_all

    moment = parse_instant(as_of) if as_of else dt.datetime.now(dt.UTC)
    if out is None and not store:
        raise fail("nothing to do: give --out FILE and/or --store")
    if dask is not None and (store or out is None):
        raise fail("--dask writes --out FILE or DIR only; --store is single-node")
    if dask is None and out is not None and out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise fail(f"{out}: the output must end in .csv or .parquet")
    settings = get_settings()
    model = current_model(model_dir, settings)
    engine = create_sync_engine(settings)
    try:
        if dask is not None and out is not None:
            from app.distributed import commands

            result = commands.score(dask, engine, model, settings, moment, out)
        else:
            result = score_all(
                engine,
                model,
                settings,
                moment,
                out,
                store,
                on_stored=ScoreRunRecorder(settings, model.version, moment, "score_run"),
            )
    except DaskUnavailable as exc:
        raise fail(str(exc)) from exc
    finally:
        engine.dispose()
    where = [str(result.path)] if result.path else []
    if result.run_id is not None:
        where.append(f"stored run {result.run_id}")
    typer.echo(
        f"scored {result.customers:,} customers with model {result.model_version} in {result.seconds:.1f} s "
        f"({result.customers / max(result.seconds, 1e-9):,.0f}/s) -> {', '.join(where)}"
    )


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
    dask: DaskSpec = None,
) -> None:
    """Rolling-origin out-of-time backtest: train at each origin, score the next H days, vs baselines."""
    import json
    from contextlib import AbstractContextManager, nullcontext

    from app.db import create_sync_engine
    from app.distributed.cluster import DaskUnavailable
    from app.training.backtest import OriginReader, Trainer, read_origin, run_backtest
    from app.training.backtest_plan import BacktestError, BacktestOptions
    from app.training.backtest_tables import origin_table, text_table, write_html
    from app.training.train import train as run_training

    settings = get_settings()
    options = BacktestOptions(
        last_origin=parse_instant(last_origin),
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
    if dask is not None and challengers:
        raise fail("--challengers is single-node only: drop it or --dask")
    engine = create_sync_engine(settings)
    try:
        parts: AbstractContextManager[tuple[Trainer, OriginReader]]
        if dask is None:
            parts = nullcontext((run_training, read_origin))
        else:
            from app.distributed import commands

            parts = commands.backtest_parts(dask)
        with parts as (trainer, reader):
            result = run_backtest(
                engine,
                options,
                trainer,
                on_origin=lambda entry: typer.echo("\n".join(origin_table(entry)), err=True),
                reader=reader,
            )
    except (BacktestError, DaskUnavailable) as exc:
        raise fail(str(exc)) from exc
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
    from app.training.options import TrainingFailed
    from app.training.reproduce import ReproduceError
    from app.training.reproduce import reproduce as run_reproduce

    engine = create_sync_engine(get_settings())
    try:
        report = run_reproduce(engine, directory, threads=threads)
    except (ReproduceError, TrainingFailed) as exc:
        raise fail(str(exc)) from exc
    finally:
        engine.dispose()
    typer.echo(f"retrained {directory} with {report.options}")
    width = max((len(check.name) for check in report.files), default=11)
    for check in report.files:
        state = "identical" if check.identical else "DIFFERENT"
        typer.echo(
            f"  {check.name:<{width}} {state:<9} original {check.expected[:16]}  "
            f"retrained {check.actual[:16]}"
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
            + (
                f", max |orders diff| {report.max_orders_diff:.3g}"
                if report.max_orders_diff is not None
                else ""
            )
            + (
                f", max |order probability diff| {report.max_propensity_diff:.3g}"
                if report.max_propensity_diff is not None
                else ""
            )
        )
    for line in report.notes + [f"ignored option {o}" for o in report.ignored_options]:
        typer.echo(f"  {line}")
    if report.identical:
        typer.echo(report.summary())
    elif report.matches(tolerance):
        typer.echo(f"reproduced within {tolerance}: {report.summary()}; every prediction agrees")
    else:
        typer.echo(f"NOT reproduced: {report.summary()}")
        raise typer.Exit(code=1)
