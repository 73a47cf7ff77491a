"""Container image: sizes per target, and start to /readyz 200 for the api image vs the same
`clv serve` on the host, in one run (BENCHMARKS.md, "Container image (issue 16)").

Needs the images of `make container-test` (localhost/clv-service:test, ...-trainer:test).

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


def host_start(url: str) -> float:
    """The same `clv serve` from the checkout's venv, with a copy of the shipped model, to ready."""
    port = free_port()
    with tempfile.TemporaryDirectory() as models:
        shutil.copytree(ROOT / "models", models, dirs_exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLV_")},
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": models,
            "CLV_PORT": str(port),
            "CLV_WORKERS": "1",
        }
        started = time.monotonic()
        process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "clv"), "serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return ready_after(port, started)
        finally:
            process.terminate()
            process.wait(60)


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
    parser.add_argument("--baseline-image", help="the image of the previous Dockerfile, for size")
    args = parser.parse_args()

    sizes = {
        "api": size_mb(args.engine, API),
        "trainer": size_mb(args.engine, TRAINER),
        "before (previous Dockerfile and lock)": (
            size_mb(args.engine, args.baseline_image) if args.baseline_image else None
        ),
    }
    container: list[float] = []
    host: list[float] = []
    with fresh_database("clv_bench_container") as url:
        for _ in range(args.runs):  # interleaved, so both see the same machine load
            container.append(container_start(args.engine, API, url))
            host.append(host_start(url))
    figures = {
        "sizes_mb": sizes,
        "container_ready_s": [round(s, 2) for s in container],
        "host_ready_s": [round(s, 2) for s in host],
    }
    print(json.dumps(figures, indent=2))

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {percentile(values, 50):.1f} | {min(values):.1f} | {max(values):.1f} |"

    size_rows = "\n".join(f"| {k} | {v} MB |" for k, v in sizes.items() if v is not None)
    body = f"""## Container image (issue 16)

{header(f"python -m bench.container --engine {args.engine} --runs {args.runs}")}- Engine: {args.engine}; images from `make container-test` (Debian bookworm base made by
  debootstrap, `.ci/container-base.sh`). The machine is shared by several jobs: read the seconds
  as one noisy sample.

| Image | Size |
|---|---|
{size_rows}

Start to ready: from `{args.engine} run -d` (fresh `models` volume, seeded with the shipped model
by the entrypoint, database wait on) to the first `GET /readyz` 200, one worker; against the same
`clv serve` started from the checkout's venv with the same model and database, interleaved.

| Start to /readyz 200 (s, {args.runs} runs) | median | min | max |
|---|---|---|---|
{row("api container", container)}
{row("clv serve on the host (baseline)", host)}

Container / host median: {percentile(container, 50) / percentile(host, 50):.2f}x.
"""
    write_section("container", body)


if __name__ == "__main__":
    main()
