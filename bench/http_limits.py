"""Request limits with and without `app.limits.GuardedHttpToolsProtocol` (issue 15).

For each HTTP protocol: `guarded` (what `clv serve` runs), uvicorn's stock `httptools`, and stock
`h11` with `h11_max_incomplete_event_size` set to the head limit (the only head bound uvicorn
offers), serve the real app on a fresh Postgres database and
1. probe the limits tests/ops/test_failures.py checks (head trickle, idle connection, huge head,
   an unread body, the concurrency limit), recording what the client sees;
2. drive `GET /healthz` with `bench.loadgen` (saturate, own process) in interleaved rounds.
/healthz does the least work per request, so its ratio is the upper bound of the protocol's share.

    python -m bench.http_limits --duration 10 --rounds 3 [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, fresh_database, header, write_section

PROTOCOLS = {
    "guarded": "app.limits:GuardedHttpToolsProtocol",
    "httptools": "httptools",
    "h11": "h11",
}
HEAD_TIMEOUT = 2.0
HEAD_BYTES = 16_384
LIMIT = 64  # well above the load's connections (plus its warm-up ones): only the probe reaches it
CONNECTIONS = 16


def serve(protocol: str, port: int) -> None:
    """Child process: uvicorn with `clv serve`'s limit options and the given protocol."""
    import uvicorn

    from app.observability.logs import logging_config

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        http=PROTOCOLS[protocol],
        h11_max_incomplete_event_size=HEAD_BYTES,  # read by h11 only
        log_config=logging_config("warning"),
        log_level="warning",
        access_log=False,
        limit_concurrency=LIMIT,
        timeout_keep_alive=5,
        server_header=False,
    )


@contextmanager
def server(protocol: str, url: str, log: Path) -> Iterator[str]:
    """A running server for `protocol`; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "CLV_DATABASE_URL": url,
        "CLV_MODEL_DIR": str(log.parent / "no-model"),
        "CLV_MODEL_POLL_SECONDS": "0",
        "CLV_AUTH_DISABLED": "true",
        "CLV_HTTP_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
        "CLV_HTTP_MAX_HEADER_BYTES": str(HEAD_BYTES),
    }
    args = [sys.executable, "-m", "bench.http_limits", "--serve", protocol, "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{protocol} server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def connect(base: str) -> socket.socket:
    """A raw loopback connection to the server."""
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends within `timeout` s, and whether it closed the connection."""
    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def describe(answer: bytes) -> str:
    """Status and content type of a raw answer."""
    if not answer:
        return "no answer"
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    status = " ".join(head[0].split()[1:2])
    kinds = [
        line.split(":", 1)[1].strip() for line in head if line.lower().startswith("content-type")
    ]
    retry = [line for line in head if line.lower().startswith("retry-after")]
    return f"{status} {kinds[0] if kinds else ''}{' + Retry-After' if retry else ''}".strip()


def trickled_head(base: str) -> str:
    """A header line every 0.3 s: is the client cut off?"""
    sock = connect(base)
    sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: clv\r\n")
    started = time.monotonic()
    limit = HEAD_TIMEOUT * 4
    answer, closed = b"", False
    sock.settimeout(0.3)
    while not closed and time.monotonic() - started < limit:
        try:
            sock.sendall(b"X-Slow: 1\r\n")
            chunk = sock.recv(65536)
            answer += chunk
            closed = not chunk
        except TimeoutError:
            continue
        except ConnectionError:
            closed = True
    sock.close()
    elapsed = time.monotonic() - started
    if closed:
        return f"{describe(answer)}, closed after {elapsed:.1f} s"
    return f"still open after {limit:.0f} s"


def idle_connection(base: str) -> str:
    """A connection that never sends a byte: is it closed?"""
    sock = connect(base)
    started = time.monotonic()
    _, closed = read_all(sock, HEAD_TIMEOUT * 4)
    sock.close()
    if closed:
        return f"closed after {time.monotonic() - started:.1f} s"
    return f"still open after {HEAD_TIMEOUT * 4:.0f} s"


def huge_head(base: str) -> str:
    """1 MiB of one header."""
    sock = connect(base)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: clv\r\nX-Big: ")
        for _ in range(64):
            sock.sendall(b"a" * 16384)
        sock.sendall(b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer, _ = read_all(sock, 5)
    sock.close()
    return describe(answer)


def unread_body(base: str) -> str:
    """A GET announcing a 100 kB body it does not send: is the connection kept waiting?"""
    sock = connect(base)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: clv\r\nContent-Length: 100000\r\n\r\nab")
    started = time.monotonic()
    answer, closed = read_all(sock, HEAD_TIMEOUT * 4)
    sock.close()
    elapsed = time.monotonic() - started
    state = f"closed after {elapsed:.1f} s" if closed else f"open after {HEAD_TIMEOUT * 4:.0f} s"
    return f"{describe(answer)}, {state}"


def overloaded(base: str) -> str:
    """The answer once `LIMIT` idle connections are open."""
    idle = [connect(base) for _ in range(LIMIT)]
    try:
        time.sleep(0.3)
        response = httpx.get(f"{base}/healthz", timeout=5)
        retry = " + Retry-After" if "retry-after" in response.headers else ""
        return f"{response.status_code} {response.headers.get('content-type', '')}{retry}"
    except httpx.TransportError as exc:
        return type(exc).__name__
    finally:
        for sock in idle:
            sock.close()


PROBES: dict[str, Callable[[str], str]] = {
    "head trickled (a line per 0.3 s)": trickled_head,
    "idle connection, no byte sent": idle_connection,
    "1 MiB header": huge_head,
    "GET with an unsent 100 kB body": unread_body,
    f"request with {LIMIT} connections open": overloaded,
}


def load(base: str, work: Path, duration: float) -> dict[str, Any]:
    """bench.loadgen, saturate mode, on GET /healthz."""
    path = work / "healthz.jsonl"
    path.write_text(json.dumps({"method": "GET", "path": "/healthz", "body": None}) + "\n")
    args = [sys.executable, "-m", "bench.loadgen", "--url", base, "--requests", str(path)]
    args += ["--connections", str(CONNECTIONS), "--duration", str(duration)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    parser.add_argument("--serve", choices=PROTOCOLS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    probes: dict[str, dict[str, str]] = {}
    rates: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    p99: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    with tempfile.TemporaryDirectory() as tmp, fresh_database("clv_bench_limits") as url:
        work = Path(tmp)
        for round_ in range(args.rounds):
            order = list(PROTOCOLS) if round_ % 2 == 0 else list(reversed(PROTOCOLS))
            for name in order:
                with server(name, url, work / f"{name}.log") as base:
                    if name not in probes:
                        probes[name] = {label: probe(base) for label, probe in PROBES.items()}
                        print(name, probes[name], file=sys.stderr)
                    summary = load(base, work, args.duration)
                    print(name, summary, file=sys.stderr)
                    refused = sum(n for s, n in summary["statuses"].items() if s != "200")
                    if refused or summary["errors"]:
                        raise RuntimeError(f"{name}: not every answer was a 200: {summary}")
                    rates[name].append(summary["rps"])
                    p99[name].append(summary["p99_ms"])
    print(json.dumps({"probes": probes, "rps": rates, "p99_ms": p99}, indent=1))
    if args.write:
        write_section("http-limits", section(args, probes, rates, p99))


def section(
    args: argparse.Namespace,
    probes: dict[str, dict[str, str]],
    rates: dict[str, list[float]],
    p99: dict[str, list[float]],
) -> str:
    """The BENCHMARKS.md section."""
    names = list(PROTOCOLS)
    command = (
        f"python -m bench.http_limits --duration {args.duration:g} --rounds {args.rounds} --write"
    )
    lines = [
        "## Request limits without uvicorn internals (issue 15)",
        "",
        header(command).rstrip(),
        "- Same app, same uvicorn options (`limit_concurrency`, keep-alive, "
        f"`h11_max_incomplete_event_size={HEAD_BYTES}`), head timeout {HEAD_TIMEOUT:g} s; only "
        "`http=` differs. Load: `bench.loadgen` saturate, "
        f"{CONNECTIONS} keep-alive connections, `GET /healthz`, {args.duration:g} s per run, "
        "protocols interleaved round by round. Noisy: 2 cores shared with other jobs.",
        "",
        "What a client sees (probes as in tests/ops/test_failures.py):",
        "",
        "| probe | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for label in PROBES:
        lines.append(f"| {label} | " + " | ".join(probes[n][label] for n in names) + " |")
    base = statistics.median(rates["guarded"])
    lines += [
        "",
        "| protocol | req/s per run | median req/s | vs guarded | median p99 ms |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        runs = ", ".join(f"{r:.0f}" for r in rates[n])
        median = statistics.median(rates[n])
        lines.append(
            f"| {n} | {runs} | {median:.0f} | {median / base:.2f}x | "
            f"{statistics.median(p99[n]):.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
