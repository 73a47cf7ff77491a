"""Issue 17: the same data and the same command give the same model, however the data was loaded.

One small synthetic history is loaded four ways: into Postgres in the generator's order, into a
second Postgres database shuffled and in several loads (other internal ids, other physical
order), mostly through the API's batch endpoint into a third, and into SQLite shuffled. Training with the same options must give byte-identical
clv.onnx / churn.onnx everywhere, with 1 or 2 threads; another seed must give another model;
`clv reproduce` must confirm a model and catch a changed one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from app import schema
from app.artifacts import CHURN_ONNX, CLV_ONNX
from app.cli import cli
from app.config import Settings, get_settings
from app.db import create_sync_engine
from app.demo.generator import DemoChunk, generate_demo
from app.events.bulk import EPOCH, BulkLoader, CustomerColumns, EventColumns
from app.features.repository import offline_features
from app.scoring.predictor import Predictor
from app.training.options import TrainOptions
from app.training.train import train
from tests.conftest import app_client, create_database, drop_database

pytestmark = pytest.mark.slow
END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)
AS_OF = END - dt.timedelta(days=10)


def _take_events(events: EventColumns, index: np.ndarray) -> EventColumns:
    columns: dict[str, Any] = {
        f.name: None if getattr(events, f.name) is None else getattr(events, f.name)[index]
        for f in dataclasses.fields(events)
    }
    return EventColumns(**columns)


def _take_customers(customers: CustomerColumns, index: np.ndarray) -> CustomerColumns:
    return CustomerColumns(
        **{f.name: getattr(customers, f.name)[index] for f in dataclasses.fields(customers)}
    )


@pytest.fixture(scope="module")
def history() -> DemoChunk:
    """700 synthetic customers over two years, in one chunk."""
    (chunk,) = generate_demo(
        700, 23, start=END - dt.timedelta(days=730), end=END, chunk_customers=10_000
    )
    return chunk


def load_in_order(engine: Engine, history: DemoChunk) -> None:
    """One load, in the generator's order (customer by customer, in time)."""
    BulkLoader(engine, "USD").load(history.events, history.customers)


def load_shuffled(engine: Engine, history: DemoChunk, parts: int) -> None:
    """The events shuffled and in `parts` separate loads, the profiles (shuffled) with the first."""
    rng = np.random.default_rng(99)
    loader = BulkLoader(engine, "USD")
    profiles = _take_customers(history.customers, rng.permutation(len(history.customers)))
    for i, index in enumerate(np.array_split(rng.permutation(len(history.events)), parts)):
        loader.load(_take_events(history.events, index), profiles if i == 0 else None)


@pytest.fixture(scope="module")
def in_order(history: DemoChunk) -> Iterator[tuple[str, Engine]]:
    url = create_database("clv_repro_a")
    schema.upgrade("head", Settings(database_url=url))
    engine = create_sync_engine(Settings(database_url=url))
    load_in_order(engine, history)
    yield url, engine
    engine.dispose()
    drop_database(url)


@pytest.fixture(scope="module")
def shuffled(history: DemoChunk) -> Iterator[tuple[str, Engine]]:
    url = create_database("clv_repro_b")
    schema.upgrade("head", Settings(database_url=url))
    engine = create_sync_engine(Settings(database_url=url))
    load_shuffled(engine, history, parts=3)
    yield url, engine
    engine.dispose()
    drop_database(url)


@pytest.fixture(scope="module")
def sqlite_shuffled(
    history: DemoChunk, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('repro') / 'clv.db'}"
    schema.upgrade("head", Settings(database_url=url))
    engine = create_sync_engine(Settings(database_url=url))
    load_shuffled(engine, history, parts=2)
    yield engine
    engine.dispose()


def options(model_dir: Path, **overrides: object) -> TrainOptions:
    base: dict[str, object] = {
        "as_of": AS_OF,
        "model_dir": model_dir,
        "clv_horizon_days": 90,
        "churn_horizon_days": 60,
        "stack": 3,
        "stack_step_days": 60,
        "progress": False,
        "baselines": False,
        "threads": 2,
        "seed": 0,
    }
    return TrainOptions(**{**base, **overrides})  # type: ignore[arg-type]


def model_files(directory: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
        for name in (CLV_ONNX, CHURN_ONNX)
    }


@pytest.fixture(scope="module")
def reference(in_order: tuple[str, Engine], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model trained on the in-order Postgres database, 2 threads, seed 0."""
    return train(in_order[1], options(tmp_path_factory.mktemp("ref"))).directory


def predictions(engine: Engine, directory: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every customer's CLV and churn as of AS_OF, ordered by external id."""
    predictor = Predictor(directory)
    ids: list[str] = []
    clv, churn = [], []
    for part in offline_features(engine, AS_OF):
        out = predictor.predict(part.values)
        ids += part.customer_ids
        clv.append(out.clv)
        churn.append(out.churn_probability)
    order = np.argsort(np.array(ids), kind="stable")
    return (
        [ids[i] for i in order],
        np.concatenate(clv)[order],
        np.concatenate(churn)[order],
    )


def test_same_data_loaded_differently_gives_identical_onnx(
    reference: Path, shuffled: tuple[str, Engine], tmp_path: Path
) -> None:
    again = train(shuffled[1], options(tmp_path)).directory
    assert model_files(again) == model_files(reference)


def test_one_or_two_threads_give_identical_onnx(
    reference: Path, in_order: tuple[str, Engine], tmp_path: Path
) -> None:
    single = train(in_order[1], options(tmp_path, threads=1)).directory
    assert model_files(single) == model_files(reference)


def test_sqlite_and_postgres_give_identical_onnx(
    reference: Path, sqlite_shuffled: Engine, tmp_path: Path
) -> None:
    on_sqlite = train(sqlite_shuffled, options(tmp_path)).directory
    assert model_files(on_sqlite) == model_files(reference)


def test_another_seed_gives_another_model(
    reference: Path, in_order: tuple[str, Engine], tmp_path: Path
) -> None:
    other = train(in_order[1], options(tmp_path, seed=1)).directory
    assert model_files(other)[CLV_ONNX] != model_files(reference)[CLV_ONNX]
    ids, clv_a, churn_a = predictions(in_order[1], reference)
    _, clv_b, churn_b = predictions(in_order[1], other)
    assert len(ids) > 500
    assert np.max(np.abs(clv_a - clv_b)) > 1e-3
    assert np.max(np.abs(churn_a - churn_b)) > 1e-4


def event_payload(events: EventColumns, i: int) -> dict[str, object]:
    """Row `i` of a column batch as the JSON body item the API takes."""
    body: dict[str, object] = {
        "event_id": str(events.event_id[i]),
        "customer_id": str(events.customer_external_id[i]),
        "type": str(events.type[i]),
        "occurred_at": (
            EPOCH + dt.timedelta(microseconds=int(events.occurred_at_us[i]))
        ).isoformat(),
    }
    if events.amount_cents[i] >= 0:
        cents = int(events.amount_cents[i])
        body |= {"amount": f"{cents // 100}.{cents % 100:02d}", "currency": "USD"}
    if events.order_id[i]:
        body["order_id"] = str(events.order_id[i])
    return body


async def test_events_sent_through_the_api_give_identical_onnx(
    reference: Path, history: DemoChunk, tmp_path: Path
) -> None:
    # Profiles and a tenth of the events by bulk load; the other nine tenths, shuffled, through
    # POST /v1/events/batch (another write path, other receipt times and internal ids).
    url = create_database("clv_repro_api")
    try:
        settings = Settings(database_url=url, model_dir=tmp_path / "no-model", model_poll_seconds=0)
        schema.upgrade("head", settings)
        engine = create_sync_engine(settings)
        rng = np.random.default_rng(7)
        order = rng.permutation(len(history.events))
        bulk, api = order[: len(order) // 10], order[len(order) // 10 :]
        profiles = _take_customers(history.customers, rng.permutation(len(history.customers)))
        BulkLoader(engine, "USD").load(_take_events(history.events, bulk), profiles)
        async with app_client(settings) as client:
            for batch in np.array_split(api, math.ceil(len(api) / 1000)):
                response = await client.post(
                    "/v1/events/batch",
                    json={"events": [event_payload(history.events, int(i)) for i in batch]},
                )
                assert response.status_code == 200, response.text
                assert {r["status"] for r in response.json()["results"]} == {"created"}
        directory = train(engine, options(tmp_path / "models")).directory
        engine.dispose()
    finally:
        drop_database(url)
    assert model_files(directory) == model_files(reference)


def _reproduce(url: str, directory: Path, *extra: str) -> tuple[int, str]:
    """`clv reproduce DIRECTORY` against the database at `url`: (exit code, stdout)."""
    get_settings.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CLV_DATABASE_URL", url)
            out = CliRunner().invoke(cli, ["reproduce", str(directory), *extra])
    finally:
        get_settings.cache_clear()
    return out.exit_code, out.output


def test_clv_reproduce_confirms_the_model_on_a_database_loaded_differently(
    reference: Path, shuffled: tuple[str, Engine]
) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    recorded = manifest["reproduce"]["options"]
    assert recorded["seed"] == 0
    assert recorded["stack"] == 3
    assert dt.datetime.fromisoformat(recorded["as_of"]) == AS_OF
    assert manifest["reproduce"]["data"]["content_sha256"]
    code, output = _reproduce(shuffled[0], reference)
    assert code == 0, output
    assert "bit-identical" in output
    assert "data: the same" in output


def test_clv_reproduce_catches_a_model_that_differs(
    reference: Path, in_order: tuple[str, Engine], tmp_path: Path
) -> None:
    # The same artifact, but its manifest now claims another seed: retraining with that seed
    # cannot give these files back.
    tampered = tmp_path / reference.name
    shutil.copytree(reference, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["reproduce"]["options"]["seed"] = 5
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    code, output = _reproduce(in_order[0], tampered)
    assert code == 1, output
    assert "NOT reproduced" in output
    assert "DIFFERENT" in output
