"""`clv backtest --dask`: every origin trained on the cluster, reached by its scheduler address."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app import schema
from app.config import Settings
from app.db import create_sync_engine
from app.demo.generator import generate_demo
from app.distributed import commands
from app.distributed.cluster import Cluster
from app.events.bulk import BulkLoader
from app.training.backtest import run_backtest
from app.training.backtest_plan import BacktestOptions
from app.training.options import TrainOptions, TrainResult
from tests.conftest import create_database, drop_database

pytestmark = pytest.mark.slow
END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def shop() -> Iterator[Engine]:
    url = create_database("clv_dask_backtest")
    settings = Settings(database_url=url)
    schema.upgrade("head", settings)
    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, "USD")
    for chunk in generate_demo(1_200, 5, start=END - dt.timedelta(days=3 * 365), end=END):
        loader.load(chunk.events, chunk.customers)
    yield engine
    engine.dispose()
    drop_database(url)


def test_backtest_trains_each_origin_on_the_scheduler(shop: Engine, cluster: Cluster) -> None:
    options = BacktestOptions(
        last_origin=END - dt.timedelta(days=100),
        origins=1,
        step_days=45,
        clv_horizon_days=90,
        churn_horizon_days=60,
        threads=1,
        bg_nbd=False,
    )
    engines: list[dict[str, object]] = []
    address = cluster.client.scheduler.address
    with commands.backtest_trainer(address) as trainer:

        def small(engine: Engine, train_options: TrainOptions) -> TrainResult:
            result = trainer(engine, dataclasses.replace(train_options, stack=2))
            engines.append(result.manifest.training["engine"])
            return result

        result = run_backtest(shop, options, small)
    assert engines == [
        {"name": "dask", "scheduler": address, "workers": 2, "threads_per_worker": 1}
    ]
    methods = result["origins"][0]["methods"]
    assert methods["model"]["status"] == "ok"
    assert methods["model"]["gini"] > 0.3
    assert methods["model"]["auc"] > 0.65
