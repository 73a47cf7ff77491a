"""A small HTTP/1.1 load generator (keep-alive connections over raw asyncio streams).

Runs as its own process so the server under test does not share its CPU time with the client's
event loop. Two modes:
- `saturate`: N connections each send the next request as soon as the previous answer arrived;
- `rate`: open-loop, requests start on a fixed schedule (`--rate` per second) whatever the
  latency, and latency is measured from the scheduled start (no coordinated omission).

    python -m bench.loadgen --url http://127.0.0.1:8000 --requests reqs.jsonl --mode rate --rate 500
Each line of the requests file: {"method": "GET", "path": "/v1/...", "body": null | {...}}; cycled.
Prints one JSON object with counts, errors, throughput and latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.common import percentile


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (scheduled s, latency s)


def encode(request: dict[str, object], host: str, headers: list[str]) -> bytes:
    body = b"" if request.get("body") is None else json.dumps(request["body"]).encode()
    head = f"{request['method']} {request['path']} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    head += "".join(f"{h}\r\n" for h in headers)
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams."""

    #: Requests sent again because a kept-alive connection turned out closed (reported).
    resends = 0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.idle_since = time.perf_counter()

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def send(self, payload: bytes) -> tuple[int, bytes]:
        """Write one request, read its answer: (status, body)."""
        reused = self.writer is not None
        if self.writer is None:
            await self.connect()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(payload)
        status_line = await self.reader.readline()
        if not status_line:
            self.close()
            if reused:  # closed while idle, before our request was read: resend on a new one
                Connection.resends += 1
                return await self.send(payload)
            raise ConnectionError("closed by the server")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        self.idle_since = time.perf_counter()
        return status, body


async def saturate(
    host: str,
    port: int,
    payloads: list[bytes],
    connections: int,
    duration: float,
    once: bool = False,
) -> tuple[Stats, float]:
    stats = Stats()
    deadline = time.perf_counter() + duration
    counter = iter(range(10**12))

    async def loop() -> None:
        conn = Connection(host, port)
        while once or time.perf_counter() < deadline:
            index = next(counter)
            if once and index >= len(payloads):
                break  # every request sent exactly once
            payload = payloads[index % len(payloads)]
            t0 = time.perf_counter()
            try:
                status, _ = await conn.send(payload)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                stats.errors += 1
                conn = Connection(host, port)
                continue
            stats.latencies.append(time.perf_counter() - t0)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    return stats, time.perf_counter() - started


async def at_rate(
    host: str, port: int, payloads: list[bytes], rate: float, duration: float
) -> tuple[Stats, float]:
    stats = Stats()
    idle: list[Connection] = [Connection(host, port) for _ in range(64)]
    # Connected before the clock starts, as a client's pool would be: otherwise the first
    # burst of a short run measures 64 TCP handshakes, not the server.
    await asyncio.gather(*(conn.connect() for conn in idle))
    total = int(rate * duration)
    # The schedule starts a moment from now: creating thousands of tasks takes tens of ms,
    # which would otherwise count as lateness of the first requests.
    started = time.perf_counter() + 0.001 * total / 100 + 0.05

    async def one(i: int) -> None:
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = idle.pop() if idle else Connection(host, port)
        try:
            status, _ = await conn.send(payloads[i % len(payloads)])
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            idle.append(conn)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            stats.errors += 1
            return
        stats.latencies.append(time.perf_counter() - scheduled)
        stats.timeline.append((scheduled - started, stats.latencies[-1]))

    await asyncio.gather(*(one(i) for i in range(total)))
    return stats, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", required=True, help="JSONL file of requests (cycled)")
    parser.add_argument("--mode", choices=["saturate", "rate"], default="saturate")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--timeline", help="rate: write 'scheduled_s latency_ms' per request to this file"
    )
    parser.add_argument(
        "--once", action="store_true", help="saturate: send each request once, then stop"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="Extra header, e.g. 'Authorization: Bearer ...'",
    )
    args = parser.parse_args()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with open(args.requests) as handle:
        payloads = [
            encode(json.loads(line), f"{host}:{port}", args.header)
            for line in handle
            if line.strip()
        ]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # No collector pauses in the load generator: open-loop latency counts from the scheduled
    # send time, so a pause here (thousands of pending tasks) would be charged to the server.
    gc.disable()
    if args.warmup:
        asyncio.run(saturate(host, port, payloads, min(args.connections, 8), args.warmup))
    if args.mode == "saturate":
        stats, elapsed = asyncio.run(
            saturate(host, port, payloads, args.connections, args.duration, args.once)
        )
    else:
        stats, elapsed = asyncio.run(at_rate(host, port, payloads, args.rate, args.duration))
    ms = [v * 1000 for v in stats.latencies]
    if args.timeline:
        with open(args.timeline, "w") as out:
            out.writelines(f"{at:.4f} {lat * 1000:.2f}\n" for at, lat in sorted(stats.timeline))
    print(
        json.dumps(
            {
                "mode": args.mode,
                "requests": len(ms),
                "errors": stats.errors,
                "statuses": stats.statuses,
                "seconds": round(elapsed, 3),
                "rps": round(len(ms) / elapsed, 1),
                "p50_ms": round(percentile(ms, 50), 2),
                "p95_ms": round(percentile(ms, 95), 2),
                "p99_ms": round(percentile(ms, 99), 2),
                "max_ms": round(max(ms), 2) if ms else None,
            }
        )
    )


if __name__ == "__main__":
    main()
