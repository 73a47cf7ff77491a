"""`clv backtest --dask`: every origin trained on the cluster, reached by its scheduler address,
and every origin's features and labels read on its workers, equal to the single-node read."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine

from app.distributed import commands
from app.distributed.backtest import origin_reader
from app.distributed.cluster import Cluster
from app.features import repository
from app.training.backtest import read_origin, run_backtest
from app.training.backtest_plan import BacktestOptions
from app.training.options import TrainOptions, TrainResult
from tests.conftest import demo_database

pytestmark = pytest.mark.slow
END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def shop() -> Iterator[Engine]:
    with demo_database("clv_dask_backtest", 1_200, 5, end=END) as (_, engine):
        yield engine


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
    with commands.backtest_parts(address) as (trainer, reader):

        def small(engine: Engine, train_options: TrainOptions) -> TrainResult:
            result = trainer(engine, dataclasses.replace(train_options, stack=2))
            engines.append(result.manifest.training["engine"])
            return result

        result = run_backtest(shop, options, small, reader=reader)
    assert engines == [
        {"name": "dask", "scheduler": address, "workers": 2, "threads_per_worker": 1}
    ]
    methods = result["origins"][0]["methods"]
    assert methods["model"]["status"] == "ok"
    assert methods["model"]["gini"] > 0.3
    assert methods["model"]["auc"] > 0.65


def test_the_workers_read_each_origin_as_one_node_does(shop: Engine, cluster: Cluster) -> None:
    origin = END - dt.timedelta(days=200)
    windows = (90, 60, 30)
    single_matrix, single_labels = read_origin(shop, origin, windows)
    with commands.backtest_parts(cluster.client.scheduler.address) as parts:
        matrix, labels = parts.reader(shop, origin, windows)
    assert len(single_matrix) > 500  # customers with an event by the origin
    assert matrix.customer_ids == single_matrix.customer_ids
    assert np.array_equal(matrix.values, single_matrix.values)
    assert np.array_equal(matrix.n_events, single_matrix.n_events)
    assert np.array_equal(matrix.customer_pks, single_matrix.customer_pks)
    assert sorted(labels) == sorted(single_labels) == [30, 60, 90]
    for days in windows:
        assert np.array_equal(labels[days][0], single_labels[days][0])
        assert np.array_equal(labels[days][1], single_labels[days][1])
    assert labels[90][1].sum() > labels[30][1].sum() > 0  # real windows, not empty ones


def test_several_ranges_combine_in_external_id_order(cluster: Cluster) -> None:
    """Ranges arrive as the workers finish them; the combined read is in external-id order."""
    with demo_database("clv_dask_backtest_ranges", 300, 9, years=400 / 365, end=END) as (
        _,
        engine,
    ):
        origin = END - dt.timedelta(days=60)
        single = read_origin(engine, origin, (30,))
        ranges = repository.id_ranges(engine, chunk_customers=37)
        assert len(ranges) > 5
        matrix, labels = origin_reader(cluster, chunk_customers=37)(engine, origin, (30,))
    assert matrix.customer_ids == single[0].customer_ids == sorted(matrix.customer_ids)
    assert np.array_equal(matrix.values, single[0].values)
    assert np.array_equal(labels[30][0], single[1][30][0])
    assert np.array_equal(labels[30][1], single[1][30][1])
