"""The embedded SQLite default: stored runs emit alerts, the feed pages, the deliverer delivers."""

from __future__ import annotations

import datetime as dt

from app.config import Settings
from tests.alerts.receiver import receiving
from tests.alerts.support import stored_run
from tests.alerts.test_webhooks import deliver_until, fast
from tests.conftest import app_client
from tests.scoring.support import AS_OF_INSTANT, load_demo


async def test_alerts_and_delivery_on_sqlite(sqlite_settings: Settings) -> None:
    load_demo(sqlite_settings, 80, seed=12)
    settings = fast(sqlite_settings)
    async with app_client(settings) as client:
        with receiving() as receiver:
            hook = (await client.post("/v1/webhooks", json={"url": receiver.url})).json()
            receiver.secrets = [hook["secret"]]
            assert stored_run(sqlite_settings, AS_OF_INSTANT) == 0
            emitted = stored_run(sqlite_settings, AS_OF_INSTANT + dt.timedelta(days=45))
            assert emitted > 0
            feed = (await client.get("/v1/alerts", params={"limit": "1000"})).json()["items"]
            assert len(feed) == emitted
            assert "customer.at_risk" in {a["type"] for a in feed}
            await deliver_until(settings, lambda: len(receiver.received) >= emitted)
        assert sorted(receiver.ids()) == sorted(a["id"] for a in feed)
        assert all(r.valid for r in receiver.received)
        hooks = (await client.get("/v1/webhooks")).json()["items"]
        assert hooks[0]["deliveries"]["delivered"] == emitted
