"""`clv train --dask` on CDNOW protocol A: the rows of single node, xgboost.dask, the same artifact.

One CDNOW database and one model per engine for the module; the cluster (2 worker processes) is
the package's. CDNOW's 23,570 customers are cut in ranges of 5,000 ids, so both workers hold
partitions (the default range, 50,000, would put them all in one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from app import schema
from app.artifacts import current_version
from app.config import Settings
from app.db import create_sync_engine
from app.distributed.cluster import Cluster
from app.distributed.rows import DaskPanel
from app.distributed.train import fit_target, plan, train_on_dask
from app.events.bulk import BulkLoader
from app.events.transactions import read_cdnow
from app.features.definitions import parse_as_of
from app.scoring.predictor import Predictor
from app.training.dataset import Panel, churn_label, split_rows, training_cutoffs
from app.training.options import TrainOptions, TrainResult
from app.training.provenance import quantiles
from app.training.train import train
from tests.conftest import CDNOW, create_database, drop_database

pytestmark = pytest.mark.slow
CHUNK = 5_000
HORIZON = 273


@pytest.fixture(scope="module")
def cdnow() -> Iterator[tuple[str, Engine]]:
    assert CDNOW.exists(), f"{CDNOW} is missing (../shared/data)"
    url = create_database("clv_dask_cdnow")
    settings = Settings(database_url=url)
    schema.upgrade("head", settings)
    engine = create_sync_engine(settings)
    for _ in BulkLoader(engine, "USD").load_all((c, None) for c in read_cdnow(CDNOW)):
        pass
    yield url, engine
    engine.dispose()
    drop_database(url)


def protocol_a(model_dir: Path) -> TrainOptions:
    """PROTOCOL.md's protocol A; one cutoff and no BG/NBD keep the module short."""
    return TrainOptions(
        as_of=parse_as_of("1998-06-30"),
        model_dir=model_dir,
        clv_horizon_days=HORIZON,
        churn_horizon_days=HORIZON,
        split="protocol-a",
        stack=1,
        baselines=False,
        progress=False,
        threads=1,
    )


@pytest.fixture(scope="module")
def single(cdnow: tuple[str, Engine], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(cdnow[1], protocol_a(tmp_path_factory.mktemp("single")))


@pytest.fixture(scope="module")
def on_dask(
    cdnow: tuple[str, Engine], cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    url, engine = cdnow
    options = protocol_a(tmp_path_factory.mktemp("dask"))
    result: TrainResult = train_on_dask(engine, options, cluster, url, chunk_customers=CHUNK)
    return result


def test_dask_model_matches_single_node_on_protocol_a(
    single: TrainResult, on_dask: TrainResult
) -> None:
    one, many = single.manifest.metrics["model"], on_dask.manifest.metrics["model"]
    assert abs(one["gini"] - many["gini"]) <= 0.01, (one, many)
    assert abs(one["auc"] - many["auc"]) <= 0.01, (one, many)
    # Same rows, same split: the holdout (protocol A's test half) and the training rows agree.
    assert on_dask.manifest.rows == single.manifest.rows
    assert on_dask.manifest.feature_ranges == single.manifest.feature_ranges
    assert on_dask.manifest.data == single.manifest.data
    # The interval's expected share of non-buyers: BG/NBD on the same customers as of T, whose
    # features the workers computed (the "now" entry of the plan).
    expected = single.manifest.clv_intervals["non_buyers"]
    assert expected["share"] is not None
    assert on_dask.manifest.clv_intervals["non_buyers"]["customers"] == expected["customers"]
    assert on_dask.manifest.clv_intervals["non_buyers"]["share"] == pytest.approx(
        expected["share"], abs=1e-9
    )


def test_the_dask_artifact_is_the_single_node_artifact(
    single: TrainResult, on_dask: TrainResult
) -> None:
    manifest = on_dask.manifest
    assert manifest.training["engine"]["name"] == "dask"
    assert manifest.training["engine"]["workers"] == 2
    assert single.manifest.training["engine"] == {"name": "single", "workers": 1}
    assert manifest.parity.passed
    assert {"orders", "propensity"} <= set(manifest.parity.extra)
    assert sorted(p.name for p in on_dask.directory.iterdir()) == sorted(
        p.name for p in single.directory.iterdir()
    )
    assert on_dask.promoted
    assert current_version(on_dask.directory.parent) == manifest.version


def test_served_percentiles_are_computed_on_the_workers_as_on_one_node(
    cdnow: tuple[str, Engine], on_dask: TrainResult
) -> None:
    """The manifest's CLV / churn percentiles (every customer as of T, through the served
    model) come from the workers; one node computes the very same from the artifact."""
    clv, churn = Panel(cdnow[1], progress=False).served(
        on_dask.manifest.as_of, Predictor(on_dask.directory)
    )
    assert on_dask.manifest.clv_quantiles == quantiles(clv)
    assert on_dask.manifest.churn_quantiles == quantiles(churn)


def test_worker_rows_are_the_single_node_rows(cdnow: tuple[str, Engine], cluster: Cluster) -> None:
    url, engine = cdnow
    options = protocol_a(Path("unused"))
    first = parse_as_of("1997-01-01")
    cutoffs = {
        t: training_cutoffs(options.as_of, HORIZON, 2, options.stack_step_days, first)
        for t in ("clv", "churn")
    }
    panel = DaskPanel(
        cluster,
        engine,
        url,
        plan(cutoffs, {"clv": HORIZON, "churn": HORIZON}, 30, options.as_of),
        CHUNK,
    )
    assert len(panel.ranges) == 5
    assert len(set(panel.workers)) == 2
    local = Panel(engine, progress=False)
    rows = local.rows(cutoffs["churn"], HORIZON, churn_label)
    expected = split_rows(rows, cutoffs["churn"], HORIZON, 0.2, "protocol-a", 0.2, 0)
    got = panel.split("churn", HORIZON, 0.2, "protocol-a", 0.2, 0)
    assert got.split.gap_days == expected.gap_days
    for name in ("fold", "train"):
        assert len(getattr(got.split, name)) == len(getattr(expected, name))
    for name in ("validation", "holdout"):
        a, b = getattr(got.split, name), getattr(expected, name)
        assert sorted(zip(a.customer_ids, a.cutoff.tolist(), a.label.tolist(), strict=True)) == (
            sorted(zip(b.customer_ids, b.cutoff.tolist(), b.label.tolist(), strict=True))
        )
    assert np.array_equal(got.split.train.min_max(), expected.train.min_max())  # type: ignore[arg-type]
    assert panel.buyers_at(cutoffs["clv"][0]) == local.buyers_at(cutoffs["clv"][0])
    # Reproducible: same data, same partitions on the same ranks -> the same trees.
    _, rounds_a, final_a, _, holdout_a = fit_target(cluster, "churn", got, 0, 1)
    _, rounds_b, final_b, _, holdout_b = fit_target(cluster, "churn", got, 0, 1)
    assert rounds_a == rounds_b
    assert np.array_equal(holdout_a, holdout_b)
    assert final_a.save_raw("json") == final_b.save_raw("json")
    assert dataclasses.is_dataclass(got.split)
