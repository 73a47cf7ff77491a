"""`clv train` / `clv score` on 1M customers / ~20M events: single node vs Dask (issue 13).

Loads the synthetic shop of bench.features_scale, then runs the real commands:
1. `clv train` single node, then `--dask local` (a LocalCluster of 2 worker processes);
2. `clv score --out FILE` single node, `--dask local` into one file and into Parquet partitions
   (the three outputs are compared: they must be identical);
3. the same commands with `--dask tcp://127.0.0.1:8786`, against a `dask scheduler` and two
   `dask worker` processes started here (what a real cluster runs).
Each command runs in a child process of its own: its wall time and peak RSS are its own; the
Dask workers report their own peak RSS (`resource.getrusage` in each worker process).

    .venv/bin/python -m bench.dask_scale [--customers 1000000] [--stack 1] [--no-remote-train]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.config import Settings
from app.customers.models import Customer
from app.db import create_sync_engine
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader
from app.events.models import Event
from bench.common import ROOT, fresh_database, header, settle, write_section

END = dt.datetime(2026, 6, 30, tzinfo=dt.UTC)
SCHEDULER = "tcp://127.0.0.1:8786"


def child(argv: list[str]) -> None:
    """Child process: `clv ARGV` in this process; print wall time and peak memory as JSON.

    With --dask, the workers' peak RSS is read just before the cluster closes (local) or from
    the running workers (remote).
    """
    from contextlib import contextmanager as cm

    from app.distributed import cluster as cluster_module
    from app.distributed.tasks import worker_memory

    workers: list[dict[str, Any]] = []
    original = cluster_module.connect

    @cm
    def measured(text: str) -> Iterator[Any]:
        with original(text) as connected:
            yield connected
            workers.extend(connected.client.run(worker_memory).values())

    cluster_module.connect = measured
    from app.cli import cli

    started = time.perf_counter()
    code = 0
    try:
        cli(argv, standalone_mode=False)
    except SystemExit as exc:
        code = int(exc.code or 0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "BENCH "
        + json.dumps({"seconds": seconds, "client_peak_mb": peak, "workers": workers, "code": code})
    )


def run(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`clv ARGS` in a measured child process."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.dask_scale", "--child", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"clv {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    measured: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH "))
    if measured["code"] not in (0, 3):
        raise SystemExit(
            f"clv {' '.join(args)} exited {measured['code']}:\n{result.stderr[-4000:]}"
        )
    measured["stdout"] = result.stdout
    shown = {k: v for k, v in measured.items() if k != "stdout"}
    print(f"clv {' '.join(args)}: {json.dumps(shown)}", file=sys.stderr)
    print(metric_line(result.stdout), file=sys.stderr)
    return measured


@contextmanager
def remote_cluster(env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, stopped on exit."""
    dask = str(Path(sys.executable).with_name("dask"))
    full = {**os.environ, **env}
    logs = Path(tempfile.mkdtemp(prefix="clv-dask-logs-"))
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", "8786", "--no-dashboard"],
                env=full,
                stdout=subprocess.DEVNULL,
                stderr=(logs / "scheduler.log").open("wb"),
            )
        )
        time.sleep(3)
        for i in range(2):
            started.append(
                subprocess.Popen(
                    [dask, "worker", SCHEDULER, "--nthreads", "1", "--no-dashboard"],
                    env=full,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=(logs / f"worker-{i}.log").open("wb"),
                )
            )
        yield started
    finally:
        for process in reversed(started):
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(logs, ignore_errors=True)


def remote_workers_memory() -> list[dict[str, Any]]:
    from dask.distributed import Client

    from app.distributed.tasks import worker_memory

    with Client(SCHEDULER, timeout=10) as client:
        return list(client.run(worker_memory).values())


def metric_line(stdout: str) -> str:
    """The `model` row of `clv train`'s metrics table."""
    for line in stdout.splitlines():
        if line.strip().startswith("| model") or line.strip().startswith("model"):
            return line.strip()
    return "(no metrics line)"


def mem(measured: dict[str, Any]) -> str:
    workers = measured.get("workers") or []
    peaks = ", ".join(f"{w['peak_rss_mb']:,.0f}" for w in workers)
    return f"{measured['client_peak_mb']:,.0f}" + (f" | {peaks}" if peaks else " | -")


def same_scores(*paths: Path) -> bool:
    import pyarrow.parquet as pq

    tables = [pq.read_table(p).sort_by("customer_id") for p in paths]
    return all(t.equals(tables[0]) for t in tables[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--stack", type=int, default=1, help="clv train --stack (rows per customer)"
    )
    parser.add_argument("--no-remote-train", action="store_true")
    parser.add_argument(
        "--load-into", metavar="URL", help="only load the data into this (migrated) database"
    )
    parser.add_argument(
        "--database-url", metavar="URL", help="use a database --load-into filled (no load)"
    )
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if args.load_into:
        print(f"loaded in {load(args.load_into, args.customers):.0f} s", file=sys.stderr)
        return
    with (
        nullcontext(args.database_url) if args.database_url else fresh_database("clv_bench_dask")
    ) as url:
        load_seconds = None if args.database_url else load(url, args.customers)
        measure(url, args, load_seconds)


def load(url: str, customers: int) -> float:
    """bench.features_scale's synthetic shop, bulk-loaded and settled; seconds."""
    engine = create_sync_engine(Settings(database_url=url))
    started = time.perf_counter()
    chunks = generate_demo(
        customers, 2, start=END - dt.timedelta(days=3 * 365), end=END, chunk_customers=10_000
    )
    loader = BulkLoader(engine, "USD")
    for _ in loader.load_all((c.events, c.customers) for c in chunks):
        pass
    seconds = time.perf_counter() - started
    settle(engine)
    engine.dispose()
    return seconds


def measure(url: str, args: argparse.Namespace, load_seconds: float | None) -> None:
    """Every command, single node and Dask; the section of BENCHMARKS.md, rewritten after each
    command (a long run interrupted still leaves what it measured).

    Training runs first (the slowest and most memory-hungry commands); scoring uses the shipped
    default model (models/), so it needs no training run.
    """
    work = Path(tempfile.mkdtemp(prefix="clv-bench-dask-"))
    rows: list[tuple[str, dict[str, Any]]] = []
    notes: dict[str, str] = {}
    engine = create_sync_engine(Settings(database_url=url))
    with engine.connect() as connection:
        events = connection.execute(select(func.count()).select_from(Event)).scalar_one()
        customers = connection.execute(select(func.count()).select_from(Customer)).scalar_one()
    engine.dispose()
    data = (
        f"Data: {customers:,} synthetic customers, {events:,} events (bench.features_scale's "
        f"generator{'' if load_seconds is None else f', loaded in {load_seconds:.0f} s'})"
    )

    def publish() -> None:
        section(args, data, rows, notes)

    env = {"CLV_DATABASE_URL": url, "CLV_MODEL_DIR": str(ROOT / "models")}
    as_of = ["--as-of", END.date().isoformat()]
    train = ["train", "--as-of", END.date().isoformat(), "--stack", str(args.stack)]
    train += ["--no-baselines", "--force"]
    for name, extra in (
        ("`clv train` single node", []),
        ("`clv train --dask local`", ["--dask", "local"]),
    ):
        model_env = {**env, "CLV_MODEL_DIR": str(work / f"models-{len(rows)}")}
        rows.append((name, run(model_env, *train, *extra)))
        publish()
    single_out, file_out, parts_out = work / "single.parquet", work / "dask.parquet", work / "parts"
    rows.append(("`clv score` single node", run(env, "score", *as_of, "--out", str(single_out))))
    publish()
    remote_out = work / "remote"
    with remote_cluster(env):
        time.sleep(5)
        measured = run(env, "score", *as_of, "--out", str(remote_out), "--dask", SCHEDULER)
        measured["workers"] = remote_workers_memory()
        rows.append((f"`clv score --dask {SCHEDULER}` (partitions)", measured))
        notes["remote"] = (
            "Remote scheduler's partitions identical to single node: "
            f"**{same_scores(single_out, remote_out)}**."
        )
        publish()
        if not args.no_remote_train:
            remote_env = {**env, "CLV_MODEL_DIR": str(work / "models-remote")}
            measured = run(remote_env, *train, "--dask", SCHEDULER)
            measured["workers"] = remote_workers_memory()
            rows.append((f"`clv train --dask {SCHEDULER}`", measured))
            publish()
    rows.append(
        (
            "`clv score --dask local` (one file)",
            run(env, "score", *as_of, "--out", str(file_out), "--dask", "local"),
        )
    )
    publish()
    rows.append(
        (
            "`clv score --dask local` (Parquet partitions)",
            run(env, "score", *as_of, "--out", str(parts_out), "--dask", "local"),
        )
    )
    notes["identical"] = (
        "Scores identical (every column, every customer) single node vs `--dask local` one file "
        f"vs partitions: **{same_scores(single_out, file_out, parts_out)}**."
    )
    publish()
    shutil.rmtree(work, ignore_errors=True)


def section(
    args: argparse.Namespace,
    data: str,
    rows: list[tuple[str, dict[str, Any]]],
    notes: dict[str, str],
) -> None:
    """BENCHMARKS.md's section from what was measured so far."""
    loadavg = os.getloadavg()
    base = {name: m["seconds"] for name, m in rows}
    table = [
        "| Command | Wall s | x single node | Peak RSS MiB: client (CLI) | each worker |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        reference = base.get(
            "`clv train` single node" if "train" in name else "`clv score` single node"
        )
        ratio = f"{m['seconds'] / reference:.2f}" if reference else "-"
        table.append(f"| {name} | {m['seconds']:.1f} | {ratio} | {mem(m)} |")
    models = [f"- {name}: `{metric_line(m['stdout'])}`" for name, m in rows if "train" in name]
    lines = [
        header(
            f"python -m bench.dask_scale --customers {args.customers} --stack {args.stack}"
            + (" --no-remote-train" if args.no_remote_train else "")
        ),
        f"{data}. Scoring with the shipped default model (models/); training `--stack "
        f"{args.stack} --no-baselines`. Dask: 2 workers x 1 thread (`local` = LocalCluster "
        "started by the command; remote = `dask scheduler` + 2 `dask worker --nthreads 1` on "
        "127.0.0.1, driven by the unchanged command). Each command in a child process: its "
        "wall time and peak RSS are its own; each worker's peak RSS is read in the worker. "
        f"Load average when written: {loadavg[0]:.2f} / {loadavg[1]:.2f} / {loadavg[2]:.2f} "
        "(2 cores, shared with other jobs).",
        "",
        *table,
        "",
        *notes.values(),
        "",
        *(
            ["Holdout metrics of each trained model (`clv train`'s table, model row):", *models]
            if models
            else []
        ),
    ]
    body = "\n".join(lines)
    print(body)
    write_section("dask-scale", "## Offline work on Dask (issue 13)\n\n" + body)


if __name__ == "__main__":
    main()
