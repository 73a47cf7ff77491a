"""`clv rescore`, `clv deliver`, `clv plan`: churn alerts, their webhooks, retention campaigns."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import current_model, fail, parse_instant
from app.config import get_settings


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
    from app.db import create_sync_engine
    from app.scoring.batch import score_all

    settings = get_settings()
    model = current_model(model_dir, settings)
    instant = parse_instant(as_of) if as_of else dt.datetime.now(dt.UTC)
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
        raise fail(str(exc)) from exc
    settings = get_settings()
    engine = create_sync_engine(settings)
    try:
        with engine.connect() as connection:
            result = plan_campaign_sync(connection, request, settings.currency)
    except InvalidInput as exc:
        raise fail(exc.detail or "invalid input") from exc
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
