"""`POST /v1/events/batch?score=true`: every timestamp the validator accepts is scored, never a 500.

The scoring step once re-parsed the raw items with `datetime.fromisoformat`, which refuses some
RFC 3339 spellings the validator accepts (a lowercase `z`), so the whole batch answered 500 and
was rolled back. The fuzz test draws timestamps from the whole RFC 3339 grammar the API accepts.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from functools import partial

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select

from app.config import Settings
from app.db import sync_url
from app.events.models import Event
from tests.conftest import app_client
from tests.factories import event


def stored_instant(settings: Settings, event_id: str) -> dt.datetime | None:
    engine = create_engine(sync_url(settings.database_url))
    with engine.connect() as connection:
        value = connection.execute(
            select(Event.occurred_at).where(Event.event_id == event_id)
        ).scalar_one_or_none()
    engine.dispose()
    return value


async def test_lowercase_z_is_stored_and_scored(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    items = [
        event("order", customer_id="lower-z", occurred_at="2026-01-02T10:00:00z"),
        event("session", customer_id="lower-z", occurred_at="2026-01-02t10:05:00.123456789Z"),
    ]
    response = await client.post("/v1/events/batch?score=true", json={"events": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] == 2, body
    assert [p["customer_id"] for p in body["predictions"]] == ["lower-z"]
    assert stored_instant(settings, items[0]["event_id"]) == dt.datetime(
        2026, 1, 2, 10, tzinfo=dt.UTC
    )


# RFC 3339 spellings the API accepts: T/t/space, Z/z or a numeric offset, 0-9 fraction digits.
_ids = itertools.count()
instants = st.datetimes(
    min_value=dt.datetime(1990, 1, 2), max_value=dt.datetime(2026, 11, 1), timezones=st.just(dt.UTC)
)
offsets = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-11:00", "+14:00"])


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, dt.datetime]:
    """An accepted RFC 3339 text and the instant it means (to the microsecond)."""
    moment = draw(instants).replace(microsecond=0)
    offset = draw(offsets)
    digits = draw(st.text("0123456789", min_size=0, max_size=9))
    zone = (
        dt.UTC
        if offset in ("Z", "z")
        else dt.timezone(
            (1 if offset[0] == "+" else -1)
            * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        )
    )
    local = moment.astimezone(zone)
    separator = draw(st.sampled_from(["T", "t", " "]))
    fraction = f".{digits}" if digits else ""
    text = f"{local:%Y-%m-%d}{separator}{local:%H:%M:%S}{fraction}{offset}"
    micro = int(digits[:6].ljust(6, "0")) if digits else 0
    return text, moment.replace(microsecond=micro)


@pytest.fixture
def portal_client(settings: Settings) -> Iterator[tuple[BlockingPortal, httpx.AsyncClient]]:
    """The in-process async client on an event loop in a thread: hypothesis drives plain
    functions, which call into that loop through the portal."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app_client(settings)) as client,
    ):
        yield portal, client


@hypothesis_settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(  # the reported case, always tried whatever the draws
    stamps=[("2026-01-02T10:00:00z", dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC))],
    kinds=["order"] * 4,
)
@example(
    stamps=[
        ("2026-01-02t10:00:00.123456789+05:30", dt.datetime(2026, 1, 2, 4, 30, 0, 123456, dt.UTC)),
        ("2026-01-02 23:59:59.9999z", dt.datetime(2026, 1, 2, 23, 59, 59, 999900, dt.UTC)),
    ],
    kinds=["session", "refund", "order", "order"],
)
@given(
    stamps=st.lists(timestamps(), min_size=1, max_size=4),
    kinds=st.lists(st.sampled_from(["order", "session", "refund", "click"]), min_size=4),
)
def test_batch_with_score_never_fails_on_an_accepted_timestamp(
    portal_client: tuple[BlockingPortal, httpx.AsyncClient],
    settings: Settings,
    stamps: list[tuple[str, dt.datetime]],
    kinds: list[str],
) -> None:
    round_ = next(_ids)
    items = [
        event(kind, event_id=f"fz-{round_}-{k}", customer_id=f"fz-{round_ % 3}", occurred_at=text)
        for k, ((text, _), kind) in enumerate(zip(stamps, kinds, strict=False))
    ]
    portal, client = portal_client
    post = partial(
        client.post, "/v1/events/batch", params={"score": "true"}, json={"events": items}
    )
    response = portal.call(post)
    assert response.status_code == 200, response.text
    body = response.json()
    for item, (_, instant), result in zip(items, stamps, body["results"], strict=False):
        if item["type"] == "click":  # an unknown type: rejected on its own, the rest stored
            assert result["status"] == "rejected"
            continue
        assert result["status"] == "created", result
        assert stored_instant(settings, item["event_id"]) == instant
    if body["created"]:
        assert body.get("prediction_error") is None
        assert {p["customer_id"] for p in body["predictions"]} == {
            i["customer_id"]
            for i, r in zip(items, body["results"], strict=False)
            if r["status"] == "created"
        }
