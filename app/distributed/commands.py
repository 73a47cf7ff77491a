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
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Engine

from app.config import Settings
from app.distributed.cluster import DaskUnavailable, connect
from app.training.options import TrainOptions, TrainResult

if TYPE_CHECKING:
    from app.training.backtest import OriginReader

__all__ = ["HELP", "BacktestParts", "DaskUnavailable", "backtest_parts", "score", "train"]

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


class BacktestParts(NamedTuple):
    """What `run_backtest` takes from a cluster: its trainer and its origin reader."""

    trainer: Callable[[Engine, TrainOptions], TrainResult]
    reader: OriginReader


@contextmanager
def backtest_parts(spec: str) -> Iterator[BacktestParts]:
    """One cluster for the whole backtest: every origin trained on it (`train_on_dask`), and
    every origin's features and window labels read on its workers (`origin_reader`)."""
    from app.distributed.backtest import origin_reader
    from app.distributed.train import train_on_dask

    with connect(spec) as cluster:

        def trainer(origin_engine: Engine, options: TrainOptions) -> TrainResult:
            result: TrainResult = train_on_dask(
                origin_engine, options, cluster, _url(origin_engine)
            )
            return result

        yield BacktestParts(trainer, origin_reader(cluster))
