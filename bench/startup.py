"""Worker start to ready: from `clv serve` being started to `/readyz` answering 200 (database at
head, model loaded and warmed), best and median of N runs, on an empty migrated Postgres database
and the shipped default model.

With `--baseline REV` the same runs are made, alternating, for the code at git revision REV
(exported into a temporary directory with `git archive`): a same-run before/after on one machine.
Also timed: `import app.main` alone (what every worker imports before its lifespan starts).

    .venv/bin/python -m bench.startup [--runs 7] [--baseline 025c966]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import httpx

from bench.common import ROOT, fresh_database, header, write_section
from tests.server import free_port, stop_process


def export(revision: str, into: Path) -> Path:
    """The tree of `revision` as plain files under `into` (no git metadata touched)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def time_to_ready(source: Path, env: dict[str, str], timeout: float = 120.0) -> float:
    """Seconds from starting `clv serve` (in `source`) to its first /readyz 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=source,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=1.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"clv serve exited with {process.returncode}")
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                if time.perf_counter() - started > timeout:
                    raise TimeoutError("not ready in time")
                time.sleep(0.01)
    finally:
        stop_process(process)


def import_seconds(source: Path) -> float:
    """Seconds for a fresh interpreter to `import app.main` (interpreter start included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import app.main"], cwd=source, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", help="git revision to compare with, in the same run")
    args = parser.parse_args()
    sources: dict[str, Path] = {"this code": ROOT}
    with tempfile.TemporaryDirectory(prefix="clv-bench-startup-") as work:
        if args.baseline:
            base = export(args.baseline, Path(work) / "baseline")
            sources = {f"baseline ({args.baseline})": base, **sources}
        with fresh_database("clv_bench_startup") as url:
            env = {
                "CLV_DATABASE_URL": url + "?sslmode=disable",
                "CLV_MODEL_DIR": str(ROOT / "models"),  # the shipped default model
                "CLV_MODEL_POLL_SECONDS": "0",
                "CLV_LOG_LEVEL": "warning",
            }
            ready: dict[str, list[float]] = {name: [] for name in sources}
            imports: dict[str, list[float]] = {name: [] for name in sources}
            for _ in range(args.runs):  # alternating, so drift hits every variant alike
                for name, source in sources.items():
                    ready[name].append(time_to_ready(source, env))
                    imports[name].append(import_seconds(source))
    load = os.getloadavg()
    rows = [
        f"Load average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (2 cores shared with other sessions when high).",
        "",
        f"`clv serve` (one worker) started {args.runs} times per variant, alternating; time from the "
        "process start to the first `/readyz` 200 (database at head, shipped model loaded and "
        "warmed), polled every 10 ms. `import app.main`: a fresh interpreter importing the app "
        "module, interpreter start included.",
        "",
        "| Variant | ready: best s | ready: median s | `import app.main`: best s | median s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in sources:
        rows.append(
            f"| {name} | {min(ready[name]):.2f} | {statistics.median(ready[name]):.2f} | "
            f"{min(imports[name]):.2f} | {statistics.median(imports[name]):.2f} |"
        )
    if args.baseline:
        first, last = list(sources)
        rows += [
            "",
            f"Start to ready, this code / baseline (best of {args.runs}): "
            f"**{min(ready[last]) / min(ready[first]):.2f}x** "
            f"(median {statistics.median(ready[last]) / statistics.median(ready[first]):.2f}x).",
        ]
    command = "python -m bench.startup" + (f" --baseline {args.baseline}" if args.baseline else "")
    body = header(command) + "\n" + "\n".join(rows)
    print(body)
    write_section("startup", "## Worker start to ready (issue 13)\n\n" + body)


if __name__ == "__main__":
    main()
