"""The `--dask` option of `clv train`, `clv score` and `clv backtest`, kept out of the CLI modules.

Each helper connects (or starts a local cluster), runs the offline work there and closes. A
cluster that cannot be used raises `DaskUnavailable`, which the CLI turns into one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.config import Settings
from app.distributed.cluster import DaskUnavailable, connect
from app.training.options import TrainOptions, TrainResult

__all__ = ["HELP", "DaskUnavailable", "backtest_trainer", "score", "train"]

HELP = (
    "Run on Dask: local (2 worker processes), local:N, or a scheduler address "
    "tcp://host:8786 (docs/dask.md)."
)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def train(spec: str, engine: Engine, options: Any) -> Any:
    """`clv train --dask SPEC`: TrainResult, as `app.training.train.train` returns."""
    from app.distributed.train import train_on_dask

    with connect(spec) as cluster:
        return train_on_dask(engine, options, cluster, _url(engine))


def score(
    spec: str, engine: Engine, model: Any, settings: Settings, as_of: dt.datetime, out: Path
) -> Any:
    """`clv score --dask SPEC --out OUT`: ScoreRunResult, as `score_all` returns."""
    from app.distributed.score import score_on_dask

    with connect(spec) as cluster:
        return score_on_dask(cluster, engine, model, settings, as_of, out)


@contextmanager
def backtest_trainer(spec: str) -> Iterator[Callable[[Engine, TrainOptions], TrainResult]]:
    """A trainer for `run_backtest` that trains every origin on one cluster (the origins'
    features for scoring and the baselines are still read by the command)."""
    from app.distributed.train import train_on_dask

    with connect(spec) as cluster:

        def trainer(origin_engine: Engine, options: TrainOptions) -> TrainResult:
            result: TrainResult = train_on_dask(
                origin_engine, options, cluster, _url(origin_engine)
            )
            return result

        yield trainer
