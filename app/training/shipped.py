"""The default model shipped in models/: trained on the demo generator's data, reproducibly.

`make model-default` (python -m app.training.shipped) generates the synthetic shop (orders,
refunds, sessions, views, carts, prospects) for a fixed window and seed into a throw-away SQLite
file, runs `clv train`'s code on it, and replaces every artifact in models/ with the result, so
`make run` (demo data) is served by a model that has seen refunds and browsing. The data is a
pure function of the constants below, so tests/test_shipped_model.py can regenerate it and
recompute every number. A real store trains on its own history (docs/accuracy.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from app.artifacts import POINTER, current_version, promote
from app.config import ROOT_DIR, Settings
from app.events.bulk import CustomerColumns, EventColumns
from app.training.options import TrainOptions, TrainResult
from app.training.train import train

CUSTOMERS = 6_000
SEED = 7
END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)
YEARS = 3
START = END - dt.timedelta(days=round(365.25 * YEARS))
CLV_HORIZON_DAYS = 365
CHURN_HORIZON_DAYS = 90


def demo_chunks() -> Iterator[tuple[EventColumns, CustomerColumns]]:
    """The shipped model's training data, chunk by chunk (the same on every call)."""
    from app.demo.generator import generate_demo

    for chunk in generate_demo(CUSTOMERS, SEED, start=START, end=END):
        yield chunk.events, chunk.customers


def options(model_dir: Path) -> TrainOptions:
    """The `clv train` options of the shipped model."""
    return TrainOptions(
        as_of=END,
        model_dir=model_dir,
        clv_horizon_days=CLV_HORIZON_DAYS,
        churn_horizon_days=CHURN_HORIZON_DAYS,
        threads=1,
        progress=False,
    )


def build(models: Path) -> TrainResult:
    """Train the default model and make it the only artifact in `models` (and `current`)."""
    from app import schema
    from app.db import create_sync_engine
    from app.events.bulk import BulkLoader

    with tempfile.TemporaryDirectory(prefix="clv-default-") as work:
        settings = Settings(database_url=f"sqlite:///{Path(work) / 'demo.db'}")
        schema.upgrade("head", settings)
        engine = create_sync_engine(settings)
        try:
            for _ in BulkLoader(engine, "USD").load_all(demo_chunks()):
                pass
            staging = Path(work) / "models"
            result = train(engine, options(staging))
        finally:
            engine.dispose()
        models.mkdir(parents=True, exist_ok=True)
        for old in models.iterdir():
            if old.is_dir() and (old / "manifest.json").exists():
                shutil.rmtree(old)
        target = models / result.directory.name
        shutil.copytree(result.directory, target)
    (models / POINTER).unlink(missing_ok=True)
    promote(models, target.name)
    assert current_version(models) == target.name
    return TrainResult(
        directory=target, manifest=result.manifest, promoted=True, reason=result.reason
    )


def main() -> None:
    """Command line: rebuild models/ (or --out DIR)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT_DIR / "models")
    args = parser.parse_args()
    result = build(args.out)
    from app.training.reporting import metrics_table

    sys.stdout.write(metrics_table(result.manifest) + "\n")
    sys.stdout.write(f"default model {result.directory} ({result.reason})\n")


if __name__ == "__main__":
    main()
