"""SIGKILL the real server in the middle of deliveries, restart it: every alert is delivered at
least once, a duplicate carries the same webhook-id and body, and none is lost. Also: one active
deliverer per database, and a standby takes over when it stops."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.webhooks.deliverer import run_forever
from tests.alerts.receiver import receiving
from tests.alerts.support import alert_rows, count_deliveries, stored_run
from tests.ops.support import poll
from tests.scoring.support import AS_OF_INSTANT
from tests.server import ROOT, free_port, serve_command, server_env, stop_process, wait_healthy

pytestmark = pytest.mark.slow

T1 = AS_OF_INSTANT
T2 = T1 + dt.timedelta(days=45)
WEBHOOK_ENV = {
    "CLV_WEBHOOKS_ALLOW_PRIVATE": "true",
    "CLV_WEBHOOKS_TIMEOUT_SECONDS": "2",
    "CLV_WEBHOOKS_CONCURRENCY": "4",
    "CLV_WEBHOOKS_POLL_SECONDS": "0.1",
    "CLV_WEBHOOKS_BACKOFF_SECONDS": "0.2",
}


def start_server(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`clv serve` (one worker, the deliverer inside) on loopback."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            serve_command(port),
            cwd=ROOT,
            env={**os.environ, **server_env(settings), **WEBHOOK_ENV},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    wait_healthy(process, f"http://127.0.0.1:{port}", lambda: log.read_text(errors="replace"), 60)
    return process


def test_sigkill_mid_delivery_then_restart_loses_nothing(demo: Settings) -> None:
    work = Path(tempfile.mkdtemp(prefix="clv-sigkill-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with receiving(delay=0.03) as receiver:
        server = start_server(demo, port, work / "server.log")
        try:
            hook = httpx.post(f"{base}/v1/webhooks", json={"url": receiver.url}, timeout=10)
            assert hook.status_code == 201, hook.text
            receiver.secrets = [hook.json()["secret"]]
            stored_run(demo, T1)
            stored_run(demo, T2)  # hundreds of alerts; the server starts sending them
            alerts = {r["alert_id"] for r in alert_rows(demo)}
            assert len(alerts) > 100
            assert poll(lambda: len(receiver.received) >= len(alerts) // 4, 60)
        finally:
            server.kill()  # SIGKILL: no shutdown, sends and outcome writes cut off mid-way
            server.wait()
        at_kill = len(set(receiver.ids()))
        assert at_kill < len(alerts)  # killed mid-delivery
        leased = count_deliveries(demo, hook.json()["id"])["pending"]
        assert leased > 0

        server = start_server(demo, port, work / "server.log")
        try:
            assert poll(lambda: set(receiver.ids()) >= alerts, 120), (
                f"{len(alerts - set(receiver.ids()))} alerts never delivered"
            )
            assert poll(
                lambda: count_deliveries(demo, hook.json()["id"])["delivered"] == len(alerts), 30
            )
        finally:
            stop_process(server)

    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in receiver.received:
        assert request.valid
        bodies[request.webhook_id].add(request.body)
    assert set(bodies) == alerts  # nothing lost, nothing invented
    # A duplicate is the same message: same webhook-id, same body.
    assert all(len(b) == 1 for b in bodies.values())
    for webhook_id, [body] in ((k, list(v)) for k, v in bodies.items()):
        assert json.loads(body)["id"] == webhook_id
    print(  # noqa: T201 - context for the report
        f"{len(alerts)} alerts, {len(receiver.received)} requests, "
        f"{len(receiver.received) - len(alerts)} duplicates after SIGKILL"
    )


async def test_one_active_deliverer_and_a_standby_takes_over(settings: Settings) -> None:
    leaders: list[str] = []
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(run_forever(settings, stop_a, lambda: leaders.append("a")))
    for _ in range(100):
        if leaders:
            break
        await asyncio.sleep(0.1)
    assert leaders == ["a"]
    b = asyncio.create_task(run_forever(settings, stop_b, lambda: leaders.append("b")))
    await asyncio.sleep(5)  # b polls the lock every 2 s meanwhile
    assert leaders == ["a"]
    stop_a.set()
    await a
    for _ in range(100):
        if len(leaders) == 2:
            break
        await asyncio.sleep(0.1)
    assert leaders == ["a", "b"]
    stop_b.set()
    await b
