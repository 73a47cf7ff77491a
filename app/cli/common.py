"""What every `clv` command shares: help layout, the error exit, the --as-of parser, the model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from app.config import Settings
    from app.scoring.registry import LoadedModel

#: Plain click help (rich_markup_mode=None): rich's tables cut long option names at 80 columns
#: and show a `<bool>` placeholder after flags, which take no value. Up to 120 columns wide.
HELP_SETTINGS = {"max_content_width": 120}


def fail(message: str) -> typer.Exit:
    """Print the error in red on stderr; the exit (code 2) for the caller to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def parse_instant(value: str, option: str = "--as-of") -> dt.datetime:
    """An --as-of (or `option`) value: YYYY-MM-DD = end of that UTC day, or RFC 3339 with offset."""
    from app.features.definitions import parse_as_of

    try:
        return parse_as_of(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r}: {exc}; give YYYY-MM-DD or an RFC 3339 instant with offset",
            param_hint=f"'{option}'",
        ) from exc


def current_model(model_dir: Path | None, settings: Settings) -> LoadedModel:
    """The model `current` points to in `model_dir` (default CLV_MODEL_DIR), or the error exit."""
    from app.artifacts import current_directory
    from app.scoring.registry import load_model

    directory = current_directory(model_dir or settings.model_dir)
    if directory is None:
        raise fail(
            f"no model: {(model_dir or settings.model_dir) / 'current'} does not exist; run `clv train`"
        )
    try:
        return load_model(directory, threads=settings.onnx_threads, currency=settings.currency)
    except ValueError as exc:
        raise fail(str(exc)) from exc
