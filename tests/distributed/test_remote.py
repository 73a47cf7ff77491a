"""The unchanged commands against a real `dask scheduler` and two `dask worker` processes.

What a cluster runs, on 127.0.0.1: the scheduler and the workers are the `dask` CLI's own
processes (not a LocalCluster), and `clv train` / `clv score` run as subprocesses with
`--dask tcp://127.0.0.1:PORT`, exactly as an operator types them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import demo_database
from tests.server import free_port

pytestmark = pytest.mark.slow
END = dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with demo_database("clv_dask_remote", 2_000, 13, end=END) as (url, _):
        yield url


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dask scheduler` + 2 × `dask worker --nthreads 1`; stopped (by pid) at the end."""
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{free_port()}"
    logs = tmp_path_factory.mktemp("dask-logs")
    port = address.rsplit(":", 1)[1]
    processes = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=(logs / "scheduler.log").open("wb"),
        )
    ]
    processes += [
        subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"worker-{i}.log").open("wb"),
        )
        for i in range(2)
    ]
    try:
        from dask.distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def clv(url: str, model_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={**os.environ, "CLV_DATABASE_URL": url, "CLV_MODEL_DIR": str(model_dir)},
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_train_then_score_against_a_running_scheduler(
    database: str, scheduler: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    trained = clv(
        database,
        models,
        *("train", "--as-of", "2026-06-30", "--clv-horizon-days", "180"),
        *("--churn-horizon-days", "90", "--stack", "2", "--no-baselines", "--dask", scheduler),
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    version = (models / "current").read_text().strip()
    manifest = json.loads((models / version / "manifest.json").read_text())
    assert manifest["training"]["engine"]["scheduler"] == scheduler
    assert manifest["training"]["engine"]["workers"] == 2
    assert manifest["parity"]["passed"]

    single, remote = tmp_path / "single.parquet", tmp_path / "remote"
    one = clv(database, models, "score", "--as-of", "2026-06-30", "--out", str(single))
    assert one.returncode == 0, one.stderr[-3000:]
    many = clv(
        database,
        models,
        "score",
        "--as-of",
        "2026-06-30",
        "--out",
        str(remote),
        "--dask",
        scheduler,
    )
    assert many.returncode == 0, many.stderr[-3000:]
    assert (remote / "part-00000.parquet").exists()
    expected = pq.read_table(single).sort_by("customer_id")
    assert pq.read_table(remote).sort_by("customer_id").equals(expected)
    assert expected.num_rows > 1_500
