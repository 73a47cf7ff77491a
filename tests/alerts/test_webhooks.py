"""Webhooks: registration API and SSRF guard, signed at-least-once delivery to a real receiver on
loopback, retries with backoff into dead letters, replay, secret rotation."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db import create_async_db_engine
from app.webhooks.deliverer import Deliverer, backoff
from tests.alerts.receiver import receiving
from tests.alerts.support import alert_rows, count_deliveries, stored_run
from tests.conftest import app_client, bearer
from tests.scoring.support import AS_OF_INSTANT

T1 = AS_OF_INSTANT
T2 = T1 + dt.timedelta(days=45)


def fast(settings: Settings, **changes: Any) -> Settings:
    """Webhook settings for tests: loopback allowed, short backoff and timeout, no in-serve loop."""
    return settings.model_copy(
        update={
            "webhooks_allow_private": True,
            "webhooks_deliver_in_serve": False,
            "webhooks_backoff_seconds": 0.2,
            "webhooks_backoff_max_seconds": 1.0,
            "webhooks_max_attempts": 3,
            "webhooks_timeout_seconds": 0.5,
            "webhooks_poll_seconds": 0.05,
            "webhooks_concurrency": 32,
            **changes,
        }
    )


async def deliver_until(settings: Settings, done: Callable[[], bool]) -> None:
    """Run a real deliverer on the test database until `done()` (fails after a minute)."""
    engine = create_async_db_engine(settings)
    deliverer = Deliverer(engine, settings)
    try:
        for _ in range(1200):
            if done():
                return
            await deliverer.step()
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"the deliverer did not get there: {len(deliverer.in_flight)} in flight"
        )
    finally:
        await deliverer.close()
        await engine.dispose()


@pytest.fixture
async def client_fast(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(fast(settings)) as client:
        yield client


async def test_registration_api_scopes_and_ssrf(settings: Settings) -> None:
    async with app_client(settings) as client:  # CLV_WEBHOOKS_ALLOW_PRIVATE is false here
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/",
            "http://192.168.0.10/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "ftp://93.184.216.34/",
            "http://user:pw@93.184.216.34/",
            "http://no-such-host.invalid/",
        ):
            refused = await client.post("/v1/webhooks", json={"url": url})
            assert refused.status_code == 422, (url, refused.text)
            assert refused.json()["errors"][0]["field"] == "url", url
        created = await client.post(
            "/v1/webhooks",
            json={"url": "https://93.184.216.34/hook", "events": ["customer.at_risk"]},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["secret"].startswith("whsec_")
        assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
        assert body["events"] == ["customer.at_risk"]
        listed = (await client.get("/v1/webhooks")).json()["items"]
        assert [w["id"] for w in listed] == [body["id"]]
        assert "secret" not in listed[0]
        assert listed[0]["deliveries"] == {"pending": 0, "delivered": 0, "dead": 0}
        moved = await client.patch(f"/v1/webhooks/{body['id']}", json={"url": "http://10.0.0.1/"})
        assert moved.status_code == 422
        paused = await client.patch(f"/v1/webhooks/{body['id']}", json={"enabled": False})
        assert paused.json()["enabled"] is False
        rotated = (await client.post(f"/v1/webhooks/{body['id']}/rotate-secret")).json()
        assert rotated["secret"] != body["secret"]
        assert (await client.delete(f"/v1/webhooks/{body['id']}")).status_code == 204
        assert (await client.get(f"/v1/webhooks/{body['id']}")).status_code == 404

        reader = bearer(settings.database_url, "predictions:read events:write")
        assert (await client.get("/v1/webhooks", headers=reader)).status_code == 403
        admin = bearer(settings.database_url, "webhooks:admin")
        assert (await client.get("/v1/webhooks", headers=admin)).status_code == 200


async def test_deliveries_are_signed_filtered_and_carry_the_alert_id(
    demo: Settings, client_fast: httpx.AsyncClient
) -> None:
    settings = fast(demo)
    with receiving() as everything, receiving() as at_risk_only:
        for receiver, events in ((everything, None), (at_risk_only, ["customer.at_risk"])):
            created = await client_fast.post(
                "/v1/webhooks", json={"url": receiver.url, **({"events": events} if events else {})}
            )
            assert created.status_code == 201, created.text
            receiver.secrets = [created.json()["secret"]]
        stored_run(demo, T1)
        stored_run(demo, T2)
        rows = alert_rows(demo)
        at_risk = [r for r in rows if r["type"] == "customer.at_risk"]
        assert at_risk

        await deliver_until(
            settings,
            lambda: (
                len(everything.received) >= len(rows) and len(at_risk_only.received) >= len(at_risk)
            ),
        )

    assert sorted(everything.ids()) == sorted(r["alert_id"] for r in rows)
    assert sorted(at_risk_only.ids()) == sorted(r["alert_id"] for r in at_risk)
    assert all(r.valid for r in everything.received + at_risk_only.received)
    feed = (await client_fast.get("/v1/alerts", params={"limit": "1000"})).json()["items"]
    by_id = {a["id"]: a for a in feed}
    for request in everything.received:
        assert json.loads(request.body) == by_id[request.webhook_id]
        assert abs(int(request.timestamp) - time.time()) < 300
    hooks = (await client_fast.get("/v1/webhooks")).json()["items"]
    assert [h["deliveries"] for h in hooks] == [
        {"pending": 0, "delivered": len(rows), "dead": 0},
        {"pending": 0, "delivered": len(at_risk), "dead": 0},
    ]


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_failing_receiver_gets_backoff_retries_then_dead_letter_then_replay(
    mode: str, demo: Settings, client_fast: httpx.AsyncClient
) -> None:
    settings = fast(demo)
    stored_run(demo, T1)
    stored_run(demo, T2)
    wanted = [r["alert_id"] for r in alert_rows(demo) if r["type"] == "customer.at_risk"]
    alerts = wanted[:5]
    with receiving(mode, hang_seconds=2.0) as receiver:  # type: ignore[arg-type]
        hook = (
            await client_fast.post(
                "/v1/webhooks", json={"url": receiver.url, "events": ["customer.at_risk"]}
            )
        ).json()
        receiver.secrets = [hook["secret"]]
        everything = len(wanted)

        def all_dead() -> bool:
            return (
                len(receiver.received) >= everything * settings.webhooks_max_attempts
                and _counts(demo, hook["id"])["dead"] == everything
            )

        await deliver_until(settings, all_dead)
        for alert in alerts:
            times = [r.at for r in receiver.received if r.webhook_id == alert]
            assert len(times) == settings.webhooks_max_attempts  # no more, no fewer
            gaps = [b - a for a, b in itertools.pairwise(times)]
            for attempt, gap in enumerate(gaps, start=1):  # equal jitter: at least half the delay
                assert gap >= settings.webhooks_backoff_seconds * 2 ** (attempt - 1) / 2
        dead = (
            await client_fast.get(
                f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "dead"}
            )
        ).json()["items"]
        assert len(dead) == min(everything, 100)
        assert {d["last_error"] for d in dead} == {"HTTP 500" if mode == "fail" else "timeout"}
        assert all(d["attempts"] == settings.webhooks_max_attempts for d in dead)

        # The receiver is fixed; the dead letters are replayed with their original ids.
        receiver.mode = "ok"
        before = len(receiver.received)
        replay = await client_fast.post(
            f"/v1/webhooks/{hook['id']}/replay",
            params={"since": "2000-01-01", "only_failed": "true"},
        )
        assert replay.status_code == 202
        assert replay.json() == {"scheduled": everything}
        await deliver_until(settings, lambda: _counts(demo, hook["id"])["delivered"] == everything)
        replayed = receiver.received[before:]
        assert sorted(r.webhook_id for r in replayed) == sorted(wanted)
        assert all(r.valid for r in replayed)


def _counts(settings: Settings, hook_id: int) -> dict[str, int]:
    from tests.alerts.support import count_deliveries

    return count_deliveries(settings, hook_id)


async def test_delivery_refuses_private_addresses_when_not_allowed(
    demo: Settings, client_fast: httpx.AsyncClient
) -> None:
    stored_run(demo, T1)
    stored_run(demo, T2)
    with receiving() as receiver:
        # Registered while private addresses were allowed; the deliverer now forbids them.
        hook = (await client_fast.post("/v1/webhooks", json={"url": receiver.url})).json()
        strict = fast(demo, webhooks_allow_private=False, webhooks_max_attempts=1)
        total = len(alert_rows(demo))
        await deliver_until(strict, lambda: _counts(demo, hook["id"])["dead"] == total)
        assert receiver.received == []
    dead = (
        await client_fast.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": "1"})
    ).json()["items"]
    assert dead[0]["last_error"].startswith("refused: the host '127.0.0.1' resolves to")


async def test_rotation_signs_with_both_secrets_during_the_grace_period(
    demo: Settings, client_fast: httpx.AsyncClient
) -> None:
    with receiving() as receiver:
        hook = (await client_fast.post("/v1/webhooks", json={"url": receiver.url})).json()
        rotated = (await client_fast.post(f"/v1/webhooks/{hook['id']}/rotate-secret")).json()
        receiver.secrets = [hook["secret"], rotated["secret"]]  # each must verify on its own
        stored_run(demo, T1)
        stored_run(demo, T2)
        total = len(alert_rows(demo))
        await deliver_until(fast(demo), lambda: len(receiver.received) >= total)
    assert all(r.valid for r in receiver.received)
    assert all(len(r.signature.split(" ")) == 2 for r in receiver.received)


def test_backoff_grows_with_jitter_and_a_cap(settings: Settings) -> None:
    s = fast(settings, webhooks_backoff_seconds=1.0, webhooks_backoff_max_seconds=8.0)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [backoff(attempt, s) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


async def test_checked_delivery_connects_to_the_checked_address_and_keeps_the_name(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Treat loopback as public for once, so the production path (resolve, check, connect to
    # the checked address with the name in Host) runs against the loopback receiver.
    monkeypatch.setattr("app.webhooks.ssrf.is_public", lambda _address: True)
    strict = fast(settings, webhooks_allow_private=False)
    engine = create_async_db_engine(strict)
    deliverer = Deliverer(engine, strict)
    try:
        with receiving() as receiver:
            url = receiver.url.replace("127.0.0.1", "localhost")
            receiver.secrets = ["whsec_" + base64.b64encode(b"k" * 32).decode()]
            outcome = await deliverer.send(url, receiver.secrets, "msg_pinned", b'{"a": 1}')
    finally:
        await deliverer.close()
        await engine.dispose()
    assert outcome.delivered, outcome
    [request] = receiver.received
    assert request.host == url.split("/")[2]  # localhost:<port>, not the address
    assert request.valid
    assert request.webhook_id == "msg_pinned"


async def test_alerts_past_retention_are_pruned_with_their_deliveries(
    demo: Settings, client_fast: httpx.AsyncClient
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    with receiving() as receiver:
        hook = (await client_fast.post("/v1/webhooks", json={"url": receiver.url})).json()
        receiver.secrets = [hook["secret"]]
        stored_run(demo, T1)
        stored_run(demo, T2)
        rows = alert_rows(demo)
        await deliver_until(fast(demo), lambda: len(receiver.received) >= len(rows))
    old = [r["id"] for r in rows[: len(rows) // 3]]
    sync = create_engine(make_url(demo.database_url).set(drivername="postgresql+psycopg"))
    with sync.begin() as connection:
        connection.execute(
            text("UPDATE alerts SET occurred_at = now() - interval '91 days' WHERE id = ANY(:ids)"),
            {"ids": old},
        )
    sync.dispose()
    engine = create_async_db_engine(demo)
    deliverer = Deliverer(engine, fast(demo))
    try:
        assert await deliverer.prune() == len(old)
    finally:
        await deliverer.close()
        await engine.dispose()
    assert [r["id"] for r in alert_rows(demo)] == [r["id"] for r in rows[len(old) :]]
    assert count_deliveries(demo, hook["id"])["delivered"] == len(rows) - len(old)
