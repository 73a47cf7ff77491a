"""Soak: minutes of a steady storefront mix against one real `clv serve` worker, watching for
errors, latency drift, memory growth and pool exhaustion over time.

A fresh Postgres database gets synthetic customers (`generate_demo` through the bulk loader), a
model is trained on them (`clv train --stack 2 --no-baselines`), `clv serve` runs with API keys
on, and a load generator in a separate process (raw asyncio HTTP/1.1 keep-alive, open loop: each
request starts on schedule whatever the latency, and latency counts from that schedule) sends:

    ingest   POST /v1/events                        30 %
    scored   POST /v1/events?score=true             10 %
    batch    POST /v1/events/batch (50 events)        5 %
    predict  GET  /v1/customers/{id}/prediction     40 %
    explain  GET  ...prediction?explain=true        10 %
    bulk     POST /v1/predictions/batch (100 ids)     5 %

Every answer is checked (2xx, no rejected batch item, no missing prediction); the server's RSS
and CPU time are sampled from /proc every 5 s, the pool gauges scraped from /metrics at the end,
and the stored events compared with the acknowledged ones. Results go to BENCHMARKS.md.

    .venv/bin/python -m bench.soak [--minutes 5] [--rate 150] [--customers 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from app.auth.keys import ALL_SCOPES
from app.auth.repository import create_key
from app.config import Settings
from app.db import create_sync_engine
from app.demo.generator import generate_demo
from app.events.bulk import BulkLoader
from bench.common import ROOT, fresh_database, header, percentile, run_clv, settle, write_section
from bench.loadgen import Connection
from tests.security.support import ServerProcess

#: Request kinds and their share of the mix.
MIX = {"ingest": 30, "scored": 10, "batch": 5, "predict": 40, "explain": 10, "bulk": 5}
BATCH_EVENTS = 50
BULK_IDS = 100
SAMPLE_SECONDS = 5.0
PREFIX = "soak"


# ---------------------------------------------------------------------------------------------
# The load generator (its own process: `python -m bench.soak generate ...`)


#: Idle keep-alive connections older than this are not reused: the server closes them after
#: CLV_KEEPALIVE_TIMEOUT_SECONDS (5), and a request written into a closing one would be lost.
MAX_IDLE_SECONDS = 3.0


@dataclass
class Requests:
    """Builds the next request of each kind (fresh event ids, known customer ids)."""

    host: str
    key: str
    customers: list[str]
    run: str
    rng: random.Random
    counter: int = 0

    def encode(self, method: str, path: str, body: object = None) -> bytes:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.key}\r\n"
        )
        if data:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        return head.encode() + b"\r\n" + data

    def event(self) -> dict[str, Any]:
        self.counter += 1
        # Mostly known customers, some new ones; stamped within the last hour.
        customer = (
            self.rng.choice(self.customers)
            if self.rng.random() < 0.9
            else f"{PREFIX}-new-{self.counter}"
        )
        stamp = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.rng.randint(0, 3600))
        body: dict[str, Any] = {
            "event_id": f"{PREFIX}-{self.run}-{self.counter}",
            "customer_id": customer,
            "type": "order" if self.counter % 4 == 0 else "product_view",
            "occurred_at": stamp.isoformat(),
            "properties": {"sku": f"SKU-{self.counter % 997}", "source": "soak"},
        }
        if body["type"] == "order":
            body |= {"amount": f"{self.rng.randint(500, 20000) / 100:.2f}", "currency": "USD"}
        return body

    def next(self, kind: str) -> bytes:
        customer = self.rng.choice(self.customers)
        if kind == "ingest":
            return self.encode("POST", "/v1/events", self.event())
        if kind == "scored":
            return self.encode("POST", "/v1/events?score=true", self.event())
        if kind == "batch":
            events = [self.event() for _ in range(BATCH_EVENTS)]
            return self.encode("POST", "/v1/events/batch", {"events": events})
        if kind == "predict":
            return self.encode("GET", f"/v1/customers/{customer}/prediction")
        if kind == "explain":
            return self.encode("GET", f"/v1/customers/{customer}/prediction?explain=true")
        ids = self.rng.sample(self.customers, BULK_IDS)
        return self.encode("POST", "/v1/predictions/batch", {"customer_ids": ids})


def answer_problem(kind: str, status: int, body: bytes) -> str | None:
    """Why an answer does not count as a success, or None."""
    if not 200 <= status < 300:
        return f"status {status}"
    if kind in ("scored", "batch", "bulk"):
        document = json.loads(body)
        if kind == "scored" and "prediction" not in document:
            return "no prediction"
        if kind == "batch" and document["rejected"]:
            return "rejected items"
        if kind == "bulk" and document["not_found"]:
            return "ids not found"
    return None


def acknowledged_events(kind: str, status: int) -> int:
    """Events stored by a successful answer of this kind."""
    if not 200 <= status < 300:
        return 0
    return {"ingest": 1, "scored": 1, "batch": BATCH_EVENTS}.get(kind, 0)


async def generate(args: argparse.Namespace) -> None:
    """Send the mix at `rate` per second for `seconds`; write one JSON line per request."""
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    customers = Path(args.customers_file).read_text().split()
    rng = random.Random(args.seed)
    requests = Requests(f"{host}:{port}", args.key, customers, args.run, rng)
    kinds = [kind for kind, share in MIX.items() for _ in range(share)]
    idle: list[Connection] = []
    out = Path(args.out).open("w")
    pending: set[asyncio.Task[None]] = set()
    # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
    start = time.perf_counter()
    total = int(args.rate * args.seconds)

    def connection() -> Connection:
        while idle:
            candidate = idle.pop()
            if time.perf_counter() - candidate.idle_since < MAX_IDLE_SECONDS:
                return candidate
            candidate.close()
        return Connection(host, port)

    async def one(kind: str, payload: bytes, scheduled: float) -> None:
        connection_ = connection()
        try:
            status, body = await connection_.send(payload)
            idle.append(connection_)
            problem = answer_problem(kind, status, body)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            status, problem = 0, type(exc).__name__
        record = {
            "t": round(scheduled - start, 4),
            "kind": kind,
            "ms": round((time.perf_counter() - scheduled) * 1000, 3),
            "status": status,
            "events": acknowledged_events(kind, status),
            "problem": problem,
        }
        out.write(json.dumps(record) + "\n")

    for i in range(total):
        scheduled = start + i / args.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        kind = rng.choice(kinds)
        task = asyncio.create_task(one(kind, requests.next(kind), scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    out.write(json.dumps({"resends": Connection.resends}) + "\n")
    out.close()


# ---------------------------------------------------------------------------------------------
# The orchestrator


def rss_and_cpu(pid: int) -> tuple[float, float]:
    """(resident memory in MiB, user+system CPU seconds) of a process, from /proc."""
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    return rss_kib / 1024, cpu_seconds(pid)


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PostgresCpu:
    """CPU seconds used by every process of the Postgres server (backends, autovacuum workers,
    checkpointer, WAL writer) since the first call; processes come and go, so it adds up each
    live process's growth between two calls."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self.total = 0.0

    def __call__(self) -> float:
        now = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if not (entry / "cmdline").read_bytes().startswith(b"postgres"):
                        continue
                except OSError:
                    continue
                now[int(entry.name)] = cpu_seconds(int(entry.name))
        self.total += sum(
            max(0.0, cpu - self.last[pid]) for pid, cpu in now.items() if pid in self.last
        )
        self.last = now
        return self.total


def checkpoints(engine: Engine) -> int:
    """Checkpoints the Postgres server has made so far (timed and requested)."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
            ).scalar_one()
        )


def events_maintenance(engine: Engine) -> tuple[int, int]:
    """(autovacuums, autoanalyzes) of the events table so far."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables "
                "WHERE relname = 'events'"
            )
        ).one()
    return int(row[0]), int(row[1])


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) CPU ticks of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])
    return total - idle - steal, steal, total


@dataclass
class Sample:
    """One look at the machine: seconds since start, server RSS, CPU seconds of each party."""

    at: float
    rss: float
    server_cpu: float
    postgres_cpu: float
    generator_cpu: float


def load_data(url: str, customers: int, work: Path) -> tuple[int, float, Path]:
    """Synthetic history for `customers` customers; (events, seconds, file of customer ids)."""
    engine = create_sync_engine(Settings(database_url=url))
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    started = time.perf_counter()
    loader = BulkLoader(engine, "USD")
    events = sum(
        stats.events_created
        for stats in loader.load_all(
            (chunk.events, chunk.customers)
            for chunk in generate_demo(
                customers, 1, start=end - dt.timedelta(days=3 * 365), end=end
            )
        )
    )
    seconds = time.perf_counter() - started
    settle(engine)
    with engine.connect() as connection:
        ids = [row[0] for row in connection.execute(text("SELECT external_id FROM customers"))]
    engine.dispose()
    path = work / "customers.txt"
    path.write_text("\n".join(ids))
    return events, seconds, path


def train(env: dict[str, str]) -> float:
    """`clv train --stack 2 --no-baselines` into CLV_MODEL_DIR; its duration."""
    return run_clv(env, "train", "--stack", "2", "--no-baselines")[1]


def pool_gauges(scrape: str) -> dict[str, float]:
    """The clv_db_pool_* samples of a /metrics scrape."""
    gauges = {}
    for line in scrape.splitlines():
        if line.startswith("clv_db_pool_"):
            name, value = line.rsplit(" ", 1)
            gauges[name] = float(value)
    return gauges


SERVER_BOUNDS = ("0.01", "0.05", "0.25")


def server_side_shares(scrape: str) -> dict[str, dict[str, float]]:
    """Per route, the share of 2xx answers the server itself timed within each bound (from the
    request duration histogram): what the app spent, without the time a request waited to be
    read while the worker's event loop was busy with others."""
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in scrape.splitlines():
        if not line.startswith("clv_http_request_duration_seconds_bucket{"):
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(part.split("=", 1) for part in labels[labels.index("{") + 1 : -1].split(","))
        route, bound = fields["route"].strip('"'), fields["le"].strip('"')
        if route.startswith("/v1") and fields["status"].strip('"').startswith("2"):
            counts[route][bound] += float(value)
    return {
        route: {bound: by_bound[bound] / by_bound["+Inf"] for bound in SERVER_BOUNDS}
        for route, by_bound in counts.items()
        if by_bound["+Inf"]
    }


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.1f}" if values else "–"


def report(
    records: list[dict[str, Any]],
    samples: list[Sample],
    scrape: str,
    facts: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    """The BENCHMARKS.md section body."""
    warmup, minutes = args.warmup, args.minutes
    measured = [r for r in records if r["t"] >= warmup]
    by_minute: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in measured:
        by_minute[min(int((r["t"] - warmup) // 60), minutes - 1)].append(r)
    sample_minute: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.at >= warmup:
            sample_minute[min(int((s.at - warmup) // 60), minutes - 1)].append(s)
    errors = [r for r in measured if r["problem"]]

    lines = [
        f"{facts['customers']:,} synthetic customers, {facts['events']:,} events loaded in "
        f"{facts['load_seconds']:.0f} s; model trained by `clv train --stack 2 --no-baselines` "
        f"in {facts['train_seconds']:.0f} s. One `clv serve` worker with API keys on, Postgres "
        "and the load generator (separate process, open loop, keep-alive) on the same 2 cores. "
        f"{args.rate:g} requests/s for {minutes} min after a {warmup:g} s warm-up (excluded); "
        f"mix: {', '.join(f'{k} {v} %' for k, v in MIX.items())} (batch = {BATCH_EVENTS} "
        f"events, bulk = {BULK_IDS} ids; explain = TreeSHAP reasons).",
        "",
        "### Whole run, by request kind",
        "",
        "| Kind | Requests | Errors | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in MIX:
        latencies = [r["ms"] for r in measured if r["kind"] == kind]
        bad = sum(1 for r in measured if r["kind"] == kind and r["problem"])
        lines.append(
            f"| {kind} | {len(latencies):,} | {bad} | {ms(latencies, 50)} | {ms(latencies, 95)} "
            f"| {ms(latencies, 99)} | {max(latencies, default=0):.1f} |"
        )
    lines += [
        "",
        "### Per minute",
        "",
        "| Minute | Requests | req/s | Events stored/s | Errors | p50 ms | p99 ms "
        "| Server RSS MiB (median) | CPU % of one core: server / Postgres / load generator |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rss_by_minute: dict[int, float] = {}
    for minute in range(minutes):
        rows = by_minute.get(minute, [])
        latencies = [r["ms"] for r in rows]
        points = sample_minute.get(minute, [])
        rss = percentile([p.rss for p in points], 50) if points else float("nan")
        rss_by_minute[minute] = rss
        span = points[-1].at - points[0].at if len(points) > 1 else float("nan")
        cpu = " / ".join(
            f"{100 * (getattr(points[-1], f) - getattr(points[0], f)) / span:.0f}"
            if len(points) > 1
            else "–"
            for f in ("server_cpu", "postgres_cpu", "generator_cpu")
        )
        lines.append(
            f"| {minute + 1} | {len(rows):,} | {len(rows) / 60:.1f} "
            f"| {sum(r['events'] for r in rows) / 60:.1f} "
            f"| {sum(1 for r in rows if r['problem'])} | {ms(latencies, 50)} | {ms(latencies, 99)} "
            f"| {rss:.1f} | {cpu} |"
        )
    header_cells = " | ".join(f"min {m + 1}" for m in range(minutes))
    lines += [
        "",
        "### Latency by kind and minute (p50 / p95 / p99 ms)",
        "",
        f"| Kind | {header_cells} |",
        "|---|" + "---:|" * minutes,
    ]
    for kind in MIX:
        cells = []
        for minute in range(minutes):
            latencies = [r["ms"] for r in by_minute.get(minute, []) if r["kind"] == kind]
            cells.append(f"{ms(latencies, 50)} / {ms(latencies, 95)} / {ms(latencies, 99)}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    client_share = {
        kind: [
            sum(1 for r in measured if r["kind"] == kind and r["ms"] <= 1000 * float(bound))
            / max(1, sum(1 for r in measured if r["kind"] == kind))
            for bound in SERVER_BOUNDS
        ]
        for kind in MIX
    }
    lines += [
        "",
        "### Where the time goes: share of 2xx answers within 10 / 50 / 250 ms",
        "",
        "| Route | Timed by the client | Timed by the server (`/metrics`, warm-up included) |",
        "|---|---:|---:|",
    ]
    routes = {
        "/v1/events": ("ingest", "scored"),
        "/v1/events/batch": ("batch",),
        "/v1/customers/{customer_id}/prediction": ("predict", "explain"),
        "/v1/predictions/batch": ("bulk",),
    }
    server = server_side_shares(scrape)
    for route, kinds in routes.items():
        weights = [sum(1 for r in measured if r["kind"] == k) for k in kinds]
        client = [
            sum(w * client_share[k][i] for k, w in zip(kinds, weights, strict=True))
            / max(1, sum(weights))
            for i in range(len(SERVER_BOUNDS))
        ]
        on_server = server.get(route, {})
        lines.append(
            f"| `{route}` | {' / '.join(f'{100 * c:.0f} %' for c in client)} | "
            + " / ".join(f"{100 * on_server.get(b, float('nan')):.0f} %" for b in SERVER_BOUNDS)
            + " |"
        )
    gauges = pool_gauges(scrape)
    first, last = rss_by_minute.get(0, float("nan")), rss_by_minute.get(minutes - 1, float("nan"))
    growth = last - first
    kinds_failed = sorted({str(r["problem"]) for r in errors})
    lines += [
        "",
        f"- **Errors: {len(errors)}** of {len(measured):,} requests"
        + (f" ({', '.join(kinds_failed)})" if errors else "")
        + f"; server log: {facts['server_errors']} error lines; "
        f"{facts['resends']} requests resent after the server closed an idle keep-alive "
        "connection under them (not counted as errors: nothing had been sent to the app).",
        f"- **Machine**: CPU busy {facts['machine_busy']:.0f} % of all cores over the whole run, "
        f"{facts['ours']:.0f} % by this run's server, Postgres and load generator, the rest by "
        f"anything else on the machine (steal {facts['machine_steal']:.1f} %). Postgres "
        f"maintenance meanwhile: {facts['checkpoints']} checkpoint(s), "
        f"{facts['autovacuums']} autovacuum(s) and {facts['autoanalyzes']} autoanalyze(s) of "
        "`events` (stock settings).",
        f"- **Server RSS**: {first:.1f} MiB in minute 1, {last:.1f} MiB in minute {minutes} "
        f"({growth:+.1f} MiB, {100 * growth / first:+.1f} %); peak {facts['rss_peak']:.1f} MiB.",
        f"- **Stored = acknowledged**: {facts['stored']:,} soak events in the database, "
        f"{facts['acknowledged']:,} acknowledged"
        + (" (equal)." if facts["stored"] == facts["acknowledged"] else " (**differ**)."),
        "- **Pool gauges at the end** (`/metrics`): "
        + ", ".join(f"`{name}` {value:g}" for name, value in sorted(gauges.items()))
        + ".",
    ]
    return "\n".join(lines)


def soak(args: argparse.Namespace) -> None:
    """Set up, run the generator against the server while sampling it, report."""
    work = Path(tempfile.mkdtemp(prefix="clv-soak-"))
    run = dt.datetime.now(dt.UTC).strftime("%H%M%S")
    with fresh_database("clv_bench_soak") as url:
        url += "?sslmode=disable"  # loopback: no TLS between the service and its database
        events, load_seconds, customers_file = load_data(url, args.customers, work)
        print(f"loaded {events:,} events in {load_seconds:.0f} s", file=sys.stderr)
        env = {
            "CLV_DATABASE_URL": url,
            "CLV_MODEL_DIR": str(work / "models"),
            "CLV_MODEL_POLL_SECONDS": "0",
            "CLV_LOG_LEVEL": "warning",
            "CLV_AUTH_DISABLED": "false",
        }
        train_seconds = train(env)
        print(f"trained in {train_seconds:.0f} s", file=sys.stderr)
        engine = create_sync_engine(Settings(database_url=url))
        with engine.begin() as connection:
            key = create_key(connection, "soak", ALL_SCOPES).secret
        server = ServerProcess(env, work / "server.log")
        server.start()
        assert server.process is not None
        pid = server.process.pid
        seconds = args.warmup + args.minutes * 60
        out = work / "requests.jsonl"
        generator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.soak",
                "generate",
                "--url",
                server.base,
                "--key",
                key,
                "--customers-file",
                str(customers_file),
                "--rate",
                str(args.rate),
                "--seconds",
                str(seconds),
                "--run",
                run,
                "--out",
                str(out),
            ],
            cwd=ROOT,
        )
        started = time.monotonic()
        samples: list[Sample] = []
        postgres_cpu = PostgresCpu()
        ticks_before = machine_ticks()
        checkpoints_before = checkpoints(engine)
        maintenance_before = events_maintenance(engine)
        try:
            while generator.poll() is None:
                rss, cpu = rss_and_cpu(pid)
                samples.append(
                    Sample(
                        time.monotonic() - started,
                        rss,
                        cpu,
                        postgres_cpu(),
                        cpu_seconds(generator.pid),
                    )
                )
                time.sleep(SAMPLE_SECONDS)
            scrape = httpx.get(f"{server.base}/metrics", timeout=10).text
            ticks = [
                now - before for now, before in zip(machine_ticks(), ticks_before, strict=True)
            ]
        finally:
            if generator.poll() is None:
                generator.kill()
            server.stop()
        if generator.returncode != 0:
            raise SystemExit(f"the load generator failed ({generator.returncode})")
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        records = [line for line in lines if "t" in line]
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT count(*) FROM events WHERE event_id LIKE :p"),
                {"p": f"{PREFIX}-{run}-%"},
            ).scalar_one()
        maintenance = [
            after - before
            for after, before in zip(events_maintenance(engine), maintenance_before, strict=True)
        ]
        checkpoints_during = checkpoints(engine) - checkpoints_before
        engine.dispose()
    log = server.log_text()
    facts = {
        "customers": args.customers,
        "events": events,
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        "server_errors": sum(1 for line in log.splitlines() if '"level":"error"' in line),
        "rss_peak": max((s.rss for s in samples), default=float("nan")),
        "stored": int(stored),
        "acknowledged": sum(r["events"] for r in records),
        "resends": sum(line.get("resends", 0) for line in lines),
        "machine_busy": 100 * ticks[0] / max(1, ticks[2]),
        "ours": 100
        * sum(
            getattr(samples[-1], f) - getattr(samples[0], f)
            for f in ("server_cpu", "postgres_cpu", "generator_cpu")
        )
        / max(1e-9, (samples[-1].at - samples[0].at) * (os.cpu_count() or 1)),
        "machine_steal": 100 * ticks[1] / max(1, ticks[2]),
        "autovacuums": int(maintenance[0]),
        "autoanalyzes": int(maintenance[1]),
        "checkpoints": checkpoints_during,
    }
    body = report(records, samples, scrape, facts, args)
    command = f"python -m bench.soak --minutes {args.minutes} --rate {args.rate:g} --customers {args.customers}"
    section = "## Soak\n\n" + header(command) + "\n" + body
    print(section)
    print(f"raw records, server log and model kept in {work}", file=sys.stderr)
    if not args.no_write:
        write_section("soak", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command")
    gen = commands.add_parser("generate", help="(internal) the load generator process")
    gen.add_argument("--url", required=True)
    gen.add_argument("--key", required=True)
    gen.add_argument("--customers-file", required=True)
    gen.add_argument("--rate", type=float, required=True)
    gen.add_argument("--seconds", type=float, required=True)
    gen.add_argument("--run", required=True)
    gen.add_argument("--out", required=True)
    gen.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=int, default=5, help="Measured minutes (default 5).")
    parser.add_argument("--rate", type=float, default=150, help="Requests per second.")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--warmup", type=float, default=15, help="Seconds not measured.")
    parser.add_argument("--no-write", action="store_true", help="Print only; keep BENCHMARKS.md.")
    args = parser.parse_args()
    if args.command == "generate":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(generate(args))
    else:
        soak(args)


if __name__ == "__main__":
    main()
