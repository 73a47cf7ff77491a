"""`clv score --dask`: the numbers of the single-node path, exactly, in one file or partitions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from app import schema
from app.artifacts import current_directory
from app.config import Settings
from app.db import create_sync_engine
from app.demo.generator import generate_demo
from app.distributed.cluster import Cluster
from app.distributed.score import score_on_dask
from app.events.bulk import BulkLoader
from app.features import repository
from app.scoring.batch import score_all
from app.scoring.registry import load_model
from tests.conftest import MODEL_END, create_database, drop_database

pytestmark = pytest.mark.slow
AS_OF = MODEL_END


@pytest.fixture(scope="module")
def shop(model_dir: Path) -> Iterator[tuple[Engine, Settings]]:
    """3,000 synthetic customers, scored in ranges of 500 ids (6 ranges: both workers work)."""
    url = create_database("clv_dask_score")
    settings = Settings(database_url=url, model_dir=model_dir)
    schema.upgrade("head", settings)
    engine = create_sync_engine(settings)
    loader = BulkLoader(engine, "USD")
    for chunk in generate_demo(3_000, 5, start=AS_OF - dt.timedelta(days=700), end=AS_OF):
        loader.load(chunk.events, chunk.customers)
    yield engine, settings
    engine.dispose()
    drop_database(url)


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers import the repository module fresh: the range size travels with the ranges the
    # client computes, so only the client's id_ranges needs the smaller chunk.
    original = repository.id_ranges
    monkeypatch.setattr(
        "app.distributed.score.id_ranges", lambda engine: original(engine, chunk_customers=500)
    )


def _single(engine: Engine, settings: Settings, out: Path) -> list[dict[str, object]]:
    model = load_model(current_directory(settings.model_dir))  # type: ignore[arg-type]
    score_all(engine, model, settings, AS_OF, out, store=False, progress=False)
    rows: list[dict[str, object]] = pq.read_table(out).to_pylist()
    return rows


@pytest.mark.usefixtures("small_ranges")
@pytest.mark.parametrize("name", ["scores.parquet", "partitions"])
def test_dask_scores_equal_single_node_scores(
    cluster: Cluster, shop: tuple[Engine, Settings], tmp_path: Path, name: str
) -> None:
    engine, settings = shop
    single = _single(engine, settings, tmp_path / "single.parquet")
    model = load_model(current_directory(settings.model_dir))  # type: ignore[arg-type]
    result = score_on_dask(cluster, engine, model, settings, AS_OF, tmp_path / name)
    assert result.customers == len(single) > 2_000
    out = tmp_path / name
    if name == "partitions":
        parts = sorted(p.name for p in out.iterdir())
        assert len(parts) == 6
        assert parts[0] == "part-00000.parquet"
        assert not list(tmp_path.glob(".*partial"))
    distributed = pq.read_table(out).to_pylist()
    key = lambda row: str(row["customer_id"])  # noqa: E731
    assert sorted(distributed, key=key) == sorted(single, key=key)
