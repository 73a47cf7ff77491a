"""`clv serve --workers 2` against one worker, with the CPU of every process that serves a request.

Issue 13 asks for two workers to reach 1.5x one worker "on 2 cores with Postgres beside it".
Throughput alone cannot say why a run gets what it gets, so every run here also records the CPU
time each party spent (psutil, process trees): the uvicorn workers (and how the connections
spread over them), the Postgres backends and the load generator. With those, the ceiling of two
workers on this machine follows from arithmetic: one prediction costs W µs in a worker, P µs in
Postgres and L µs in the load generator; one worker is bound by its own core (1 / W), two workers
by both cores (2 / (W + P + L)), so the best ratio two workers can reach is 2 W / (W + P + L).

Load generator: wrk (Debian's `wrk`, C, one thread, a Lua script cycling over the customers),
because bench/loadgen.py is a Python event loop that itself needs a large share of a core at
these rates (measured here, same run: its CPU per request is in the table). The other benchmarks
keep bench/loadgen.py for what wrk does not do (open-loop fixed rates, per-request latency from
the scheduled send time).

Rounds alternate the order of the two variants (1, 2 then 2, 1, ...); medians are reported.

    .venv/bin/python -m bench.workers [--customers 100000] [--rounds 4] [--duration 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from app.config import Settings
from app.db import create_sync_engine
from bench.common import (
    bench_key,
    fresh_database,
    header,
    load_demo,
    run_clv,
    sample_customer_ids,
    settle,
    write_section,
)
from bench.scoring import load as loadgen
from tests.server import running_server

CONNECTIONS = 32


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """user + system CPU seconds per live process."""
    out: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
            out[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return out


def postgres_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postg")]


def server_processes(port: int) -> list[psutil.Process]:
    """The `clv serve` process listening on `port` and its children (uvicorn's workers)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "serve" in cmdline and str(port) in cmdline:
            return [process, *process.children(recursive=True)]
    raise SystemExit(f"no clv serve process on port {port}")


class Meter:
    """CPU seconds spent by the server's processes, Postgres and the load generator over a run."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.before = (cpu_seconds(server_processes(port)), cpu_seconds(postgres_processes()))

    def stop(self, load_cpu: float) -> dict[str, Any]:
        # Listed again: a process started during the run (a new pool connection's backend, say)
        # counts with all of its CPU time. One that ended during the run is lost (none should).
        server = cpu_seconds(server_processes(self.port))
        postgres = cpu_seconds(postgres_processes())
        per_process = sorted(
            (server[pid] - self.before[0].get(pid, 0.0) for pid in server), reverse=True
        )
        return {
            "server_cpu": sum(per_process),
            # The busiest processes first: uvicorn's supervisor is the one near zero.
            "server_split": [round(s, 2) for s in per_process],
            "postgres_cpu": sum(postgres[pid] - self.before[1].get(pid, 0.0) for pid in postgres),
            "load_cpu": load_cpu,
        }


def children_cpu() -> float:
    """user + system CPU seconds of this process's finished (waited-for) children."""
    times = psutil.Process().cpu_times()
    return float(times.children_user + times.children_system)


def wrk(base: str, key: str, script: Path | None, duration: float) -> dict[str, Any]:
    """One wrk run (one thread, CONNECTIONS keep-alive connections): req/s, answers that were
    not 2xx plus socket errors, and wrk's own CPU time."""
    args = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--timeout", "10s"]
    args += ["-H", f"Authorization: Bearer {key}"]
    if script is not None:
        args += ["-s", str(script)]
    before = children_cpu()
    out = subprocess.run(
        [*args, f"{base}/healthz" if script is None else base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = children_cpu() - before
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests is None or rps is None:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    bad = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        bad += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return {
        "requests": int(requests.group(1)),
        "rps": float(rps.group(1)),
        "bad": bad,
        "load_cpu": cpu,
    }


def measured(port: int, run: Any) -> dict[str, Any]:
    meter = Meter(port)
    result = run()
    return {**result, **meter.stop(result["load_cpu"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench.workers needs wrk (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="clv-bench-workers-"))
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    runs: dict[int, list[dict[str, Any]]] = {1: [], args.workers: []}
    python_loadgen: dict[int, list[dict[str, Any]]] = {1: [], args.workers: []}
    with fresh_database("clv_bench_workers") as url:
        url += "?sslmode=disable"
        engine = create_sync_engine(Settings(database_url=url))
        events = load_demo(engine, args.customers, end)
        settle(engine)
        ids = sample_customer_ids(engine, 5000)
        key = bench_key(engine)
        engine.dispose()
        env = {
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": str(work / "models"),
            "CLV_LOG_LEVEL": "warning",
            "CLV_MODEL_POLL_SECONDS": "0",
        }
        run_clv(env, "train", "--stack", "2", "--no-baselines")
        script = work / "predictions.lua"
        paths = ",".join(f'"/v1/customers/{i}/prediction"' for i in ids)
        script.write_text(
            f"local paths = {{{paths}}}\nlocal n = 0\n"
            "request = function()\n  n = n + 1\n"
            "  return wrk.format('GET', paths[(n % #paths) + 1])\nend\n"
        )
        single = [
            {"method": "GET", "path": f"/v1/customers/{i}/prediction", "body": None} for i in ids
        ]
        for round_ in range(args.rounds):
            order = (1, args.workers) if round_ % 2 == 0 else (args.workers, 1)
            for workers in order:
                with running_server(env, "--workers", str(workers)) as base:
                    port = int(base.rsplit(":", 1)[1])
                    wrk(base, key, script, 3)  # warm every worker's pool and model
                    healthz = measured(port, lambda: wrk(base, key, None, args.duration))
                    prediction = measured(port, lambda: wrk(base, key, script, args.duration))
                    runs[workers].append({"healthz": healthz, "prediction": prediction})
                    python_loadgen[workers].append(
                        measured(
                            port,
                            lambda: _loadgen_with_cpu(base, single, work, key, args.duration),
                        )
                    )
                    print(
                        f"round {round_} workers {workers}: healthz {healthz['rps']:.0f} "
                        f"prediction {prediction['rps']:.0f} req/s",
                        file=sys.stderr,
                    )
    body = report(args, runs, python_loadgen, events)
    print(body)
    if not args.no_write:
        write_section("workers", body)


def _loadgen_with_cpu(
    base: str, requests: list[dict[str, Any]], work: Path, key: str, duration: float
) -> dict[str, Any]:
    """bench.loadgen in saturation (the other benchmarks' load generator), with its CPU time."""
    before = children_cpu()
    summary = loadgen(
        base,
        requests,
        work,
        "python-loadgen",
        key,
        mode="saturate",
        connections=CONNECTIONS,
        duration=duration,
    )
    cpu = children_cpu() - before
    bad = int(summary["errors"]) + sum(
        int(v) for k, v in summary["statuses"].items() if not str(k).startswith("2")
    )
    return {
        "requests": int(summary["requests"]),
        "rps": float(summary["rps"]),
        "bad": bad,
        "load_cpu": cpu,
    }


def per_request_us(run: dict[str, Any], part: str) -> float:
    return 1e6 * float(run[part]) / max(1, int(run["requests"]))


def report(
    args: argparse.Namespace,
    runs: dict[int, list[dict[str, Any]]],
    python_loadgen: dict[int, list[dict[str, Any]]],
    events: int,
) -> str:
    n = args.workers
    lines = [
        f"## `clv serve --workers {n}` against one worker, CPU by process (issue 13)",
        "",
        header(
            f"python -m bench.workers --customers {args.customers} --rounds {args.rounds} "
            f"--duration {args.duration:g}"
        ),
        f"Data: {args.customers:,} demo customers, {events:,} events; one model (`clv train "
        f"--stack 2`). Load: wrk, 1 thread, {CONNECTIONS} keep-alive connections, "
        f"{args.duration:g} s per run after a 3 s warm-up, single predictions cycling over "
        f"5,000 customers. {args.rounds} rounds, the variants' order alternating. CPU: psutil, "
        "user + system, over each run: the server's process tree, every Postgres process, the "
        "load generator.",
        "",
        "| Workers | run | req/s per round | median req/s | server CPU µs / req | Postgres CPU µs / req "
        "| wrk CPU µs / req | cores busy (server + Postgres + wrk) | CPU split over the server's processes (s, last round) "
        "| bad answers (all rounds) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    medians: dict[tuple[int, str], float] = {}
    for workers in (1, n):
        for kind in ("healthz", "prediction"):
            rs = [r[kind] for r in runs[workers]]
            rps = [r["rps"] for r in rs]
            medians[(workers, kind)] = statistics.median(rps)
            cores = statistics.median(
                (r["server_cpu"] + r["postgres_cpu"] + r["load_cpu"]) / args.duration for r in rs
            )
            lines.append(
                f"| {workers} | {kind} | {', '.join(f'{v:,.0f}' for v in rps)} "
                f"| **{medians[(workers, kind)]:,.0f}** "
                f"| {statistics.median(per_request_us(r, 'server_cpu') for r in rs):,.0f} "
                f"| {statistics.median(per_request_us(r, 'postgres_cpu') for r in rs):,.0f} "
                f"| {statistics.median(per_request_us(r, 'load_cpu') for r in rs):,.0f} "
                f"| {cores:.2f} | {', '.join(str(s) for s in rs[-1]['server_split'])} "
                f"| {sum(r['bad'] for r in rs)} |"
            )
    one = [r["prediction"] for r in runs[1]]
    w = statistics.median(per_request_us(r, "server_cpu") for r in one)
    p = statistics.median(per_request_us(r, "postgres_cpu") for r in one)
    lo = statistics.median(per_request_us(r, "load_cpu") for r in one)
    ceiling = 2 * w / (w + p + lo)
    ratio = medians[(n, "prediction")] / medians[(1, "prediction")]
    health_ratio = medians[(n, "healthz")] / medians[(1, "healthz")]
    lines += [
        "",
        f"{n} workers / 1 worker, single prediction: **{ratio:.2f}x** (median of rounds); "
        f"`/healthz`: {health_ratio:.2f}x.",
        "",
        f"Ceiling on this machine, from one worker's runs: a prediction costs W = {w:,.0f} µs of "
        f"worker CPU, P = {p:,.0f} µs of Postgres CPU and L = {lo:,.0f} µs of wrk CPU; two "
        f"workers on 2 cores can reach at most 2 W / (W + P + L) = **{ceiling:.2f}x**. The 1.5x "
        f"target needs P + L ≤ W / 3 ({w / 3:,.0f} µs).",
    ]
    lines += [
        "",
        "The other benchmarks' load generator (bench/loadgen.py, a Python event loop) on the same "
        "servers, same rounds, right after wrk (medians):",
        "",
        "| Workers | req/s per round | median req/s | load generator CPU µs / req "
        "| server CPU µs / req | Postgres CPU µs / req | bad answers (all rounds) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for workers, rs in sorted(python_loadgen.items()):
        rps = [r["rps"] for r in rs]
        lines.append(
            f"| {workers} | {', '.join(f'{v:,.0f}' for v in rps)} | {statistics.median(rps):,.0f} "
            f"| {statistics.median(per_request_us(r, 'load_cpu') for r in rs):,.0f} "
            f"| {statistics.median(per_request_us(r, 'server_cpu') for r in rs):,.0f} "
            f"| {statistics.median(per_request_us(r, 'postgres_cpu') for r in rs):,.0f} "
            f"| {sum(r['bad'] for r in rs)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
