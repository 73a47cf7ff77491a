"""Container image: sizes per target, and start to /readyz 200 of the api image vs the previous
image, in one run (BENCHMARKS.md, "Container image (issue 16)").

Needs the images of `make container-test` (localhost/clv-service:test, ...-trainer:test) and,
as the baseline, an image built from the previous Dockerfile and lock (`--baseline-image`).

    .venv/bin/python -m bench.container [--engine podman] [--runs 5] [--baseline-image IMAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import httpx

from bench.common import ROOT, fresh_database, header, percentile, write_section

API = "localhost/clv-service:test"
TRAINER = "localhost/clv-service-trainer:test"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ready_after(port: int, started: float, timeout: float = 120) -> float:
    """Seconds from `started` until GET /readyz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"not ready on :{port} after {timeout} s")


def engine_run(engine: str, *args: str) -> str:
    """`ENGINE ARGS`; stdout, exits on failure."""
    result = subprocess.run([engine, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{engine} {' '.join(args)}: {result.stderr}")
    return result.stdout.strip()


def container_start(engine: str, image: str, url: str) -> float:
    """`ENGINE run -d` of the api image with a fresh models volume (seeded on start) to ready."""
    port, volume = free_port(), f"clv-bench-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    name = engine_run(
        engine, "run", "-d", "--network", "host", "-e", f"CLV_DATABASE_URL={url}",
        "-e", f"CLV_PORT={port}", "-e", "CLV_WORKERS=1", "-v", f"{volume}:/srv/models", image,
    )  # fmt: skip
    try:
        return ready_after(port, started)
    finally:
        engine_run(engine, "rm", "-f", "-t", "0", name)
        engine_run(engine, "volume", "rm", "-f", volume)


def baseline_start(engine: str, image: str, url: str) -> float:
    """The previous image (no model inside): the shipped model bind-mounted read-only, to ready."""
    port = free_port()
    with tempfile.TemporaryDirectory() as models:
        shutil.copytree(ROOT / "models", models, dirs_exist_ok=True)
        os.chmod(models, 0o755)
        started = time.monotonic()
        name = engine_run(
            engine, "run", "-d", "--network", "host", "-e", f"CLV_DATABASE_URL={url}",
            "-e", f"CLV_PORT={port}", "-e", "CLV_WORKERS=1", "-v", f"{models}:/srv/models:ro",
            image,
        )  # fmt: skip
        try:
            return ready_after(port, started)
        finally:
            engine_run(engine, "rm", "-f", "-t", "0", name)


def size_mb(engine: str, image: str) -> int | None:
    """The image's size in MB (10^6 bytes), None when it is not there."""
    result = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
        check=False,
    )
    return round(int(result.stdout.strip()) / 1e6) if result.returncode == 0 else None


def main() -> None:
    """Measure, print, write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE", "podman"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--baseline-image", required=True, help="an image of the previous Dockerfile and lock"
    )
    args = parser.parse_args()

    sizes: dict[str, int | None] = {
        "api": size_mb(args.engine, API),
        "trainer": size_mb(args.engine, TRAINER),
        "before (previous Dockerfile and lock)": size_mb(args.engine, args.baseline_image),
    }
    container: list[float] = []
    before: list[float] = []
    with fresh_database("clv_bench_container") as url:
        for _ in range(args.runs):  # interleaved, so both see the same machine load
            container.append(container_start(args.engine, API, url))
            before.append(baseline_start(args.engine, args.baseline_image, url))
    figures = {
        "sizes_mb": sizes,
        "container_ready_s": [round(s, 2) for s in container],
        "before_ready_s": [round(s, 2) for s in before],
    }
    print(json.dumps(figures, indent=2))

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {percentile(values, 50):.1f} | {min(values):.1f} | {max(values):.1f} |"

    size_rows = "\n".join(f"| {k} | {v} MB |" for k, v in sizes.items())
    body = f"""## Container image (issue 16)

{header(f"python -m bench.container --engine {args.engine} --runs {args.runs} --baseline-image {args.baseline_image}")}- Engine: {args.engine}; images from `make container-test` (Debian bookworm base made by
  debootstrap, `.ci/container-base.sh`). The machine is shared by several jobs: read the seconds
  as one noisy sample.

| Image | Size |
|---|---|
{size_rows}

Start to ready: from `{args.engine} run -d` to the first `GET /readyz` 200, one worker, same
database, runs interleaved. The api image starts with a fresh `models` volume (the entrypoint seeds
the shipped model, then waits for the database); the previous image carries no model, so it gets the
same model bind-mounted read-only (without it, it is never ready).

| Start to /readyz 200 (s, {args.runs} runs) | median | min | max |
|---|---|---|---|
{row("api container", container)}
{row("previous image (baseline)", before)}

New / previous median: {percentile(container, 50) / percentile(before, 50):.2f}x.
"""
    write_section("container", body)


if __name__ == "__main__":
    main()
