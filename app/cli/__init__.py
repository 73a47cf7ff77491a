"""The `clv` command: how people and containers drive the service.

This package holds the Typer app and `main` (the console-script entry point); the commands live
in one module per family: serving (migrate, serve), data (import, demo, data quality),
modelling (train, score, backtest, reproduce), retention (rescore, deliver, plan), keys.
"""

from __future__ import annotations

import typer

from app.cli import data, modelling, retention, serving
from app.cli.common import HELP_SETTINGS
from app.cli.keys import keys_cli

cli = typer.Typer(
    name="clv",
    help="clv-service: customer lifetime value and churn predictions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)
# Registered here, in the order `clv --help` lists them.
cli.command()(serving.migrate)
cli.command()(serving.serve)
cli.command("import-transactions")(data.import_transactions)
cli.command("generate-demo")(data.generate_demo)
cli.command("data-quality")(data.data_quality)
cli.command()(modelling.train)
cli.command()(modelling.score)
cli.command()(modelling.backtest)
cli.command()(modelling.reproduce)
cli.command()(retention.rescore)
cli.command()(retention.deliver)
cli.command()(retention.plan)
cli.add_typer(keys_cli, name="keys")


def main() -> None:
    """Console-script entry point."""
    cli()
