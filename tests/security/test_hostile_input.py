"""Input from outside never reaches SQL as text and never breaks a statement: SQL-looking,
unicode, NUL and very long values in every string field, path and query parameter answer 4xx or
a safe 2xx (free text is stored verbatim), the tables stay intact, and free-form JSON documents
are bounded in size and depth and hold only what Postgres can store.

The basic limits (a 9,000-byte blob, 12 levels) are in tests/events/test_validation.py; here are
the exact boundaries, batches, profiles and the documents that used to be 500s.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from app import schema
from app.config import Settings
from app.db import Base, sync_url
from app.events.schemas import canonical_json
from tests.factories import event

PROBLEM = "application/problem+json"
HOSTILE = [
    "x'; DROP TABLE events; --",
    "' OR '1'='1",
    "Robert'); DELETE FROM customers WHERE ''='",
    '"; TRUNCATE api_keys; --',
    "$1::text",
    ":ids",
    "%s%s%s",
    "\\",
    "Ω≈ç√∫ 🚀 اختبار 测试 \u202e",
    "\u0000",
    "nul\u0000inside",
    "\ud800",  # an unpaired surrogate (valid JSON text, not encodable as UTF-8)
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "q" * 20_000,
]


def _expected_tables() -> set[str]:
    """Every table the migrations create (the ORM metadata) and alembic's own: nothing more."""
    schema.import_all_models()
    return set(Base.metadata.tables) | {"alembic_version"}


EXPECTED_TABLES = _expected_tables()
CANARY = "canary-customer"


def _assert_handled(response: httpx.Response, what: str) -> None:
    """A client error as problem+json, or a success; never a server error."""
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM, what


def _json(document: Any) -> dict[str, Any]:
    """Request options sending `document` as ASCII JSON (escapes carry even lone surrogates,
    which httpx's own UTF-8 encoding refuses)."""
    return {
        "content": json.dumps(document).encode(),
        "headers": {"content-type": "application/json"},
    }


def _requests(value: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every place a client can put a string: each body field, path and query parameter."""
    path = quote(value, safe="", errors="surrogatepass")  # lone surrogates: invalid UTF-8 bytes
    order = event("order", customer_id="hostile")
    requests: list[tuple[str, str, dict[str, Any]]] = [
        *(
            ("POST", "/v1/events", _json({**order, field: value}))
            for field in (
                "event_id",
                "customer_id",
                "type",
                "occurred_at",
                "amount",
                "currency",
                "order_id",
            )
        ),
        ("POST", "/v1/events", _json({**order, "properties": {"k": value}})),
        ("POST", "/v1/events", _json({**event("search"), "properties": {value: 1}})),
        ("POST", "/v1/events", _json({**order, value: 1})),
        ("POST", "/v1/events?score=" + path, _json(event("session"))),
        (
            "POST",
            "/v1/events/batch",
            _json({"events": [{**order, "customer_id": value}, {**order, "order_id": value}]}),
        ),
        ("PUT", f"/v1/customers/{path}", _json({})),
        *(
            ("PUT", "/v1/customers/hostile-profile", _json({field: value}))
            for field in ("signup_at", "country", "acquisition_channel")
        ),
        ("PUT", "/v1/customers/hostile-profile", _json({"attributes": {value: value}})),
        ("GET", f"/v1/customers/{path}", {}),
        ("GET", f"/v1/customers/{CANARY}/events?cursor={path}", {}),
        ("GET", f"/v1/customers/{CANARY}/events?limit={path}", {}),
        ("GET", f"/v1/customers/{path}/events", {}),
        ("GET", f"/v1/customers/{path}/features", {}),
        ("GET", f"/v1/customers/{CANARY}/features?as_of={path}", {}),
        ("GET", f"/v1/customers/{path}/prediction", {}),
        ("GET", f"/v1/customers/{CANARY}/prediction?as_of={path}", {}),
        ("GET", f"/v1/customers/{CANARY}/prediction?explain={path}", {}),
        ("POST", "/v1/predictions/batch", _json({"customer_ids": [CANARY, value]})),
        ("POST", "/v1/predictions/batch", _json({"customer_ids": [CANARY], "as_of": value})),
        ("GET", f"/v1/segments/{path}", {}),
        ("GET", f"/v1/segments/active?value_tier={path}", {}),
        ("GET", f"/v1/segments/active?cursor={path}", {}),
        ("GET", f"/v1/segments/active?limit={path}", {}),
        ("DELETE", f"/v1/customers/{path}", {}),
    ]
    return requests


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:24])
async def test_hostile_values_everywhere_are_refused_or_stored_safely(
    client: httpx.AsyncClient, settings: Settings, value: str
) -> None:
    canary = [event("order", customer_id=CANARY), event("session", customer_id=CANARY)]
    assert (await client.post("/v1/events/batch", json={"events": canary})).status_code == 200

    for method, url, options in _requests(value):
        _assert_handled(await client.request(method, url, **options), f"{method} {url[:80]}")

    engine = create_engine(sync_url(settings.database_url))
    try:
        assert set(inspect(engine).get_table_names()) == EXPECTED_TABLES
        with engine.connect() as connection:
            canary_rows = connection.execute(
                text(
                    "SELECT count(*) FROM events e JOIN customers c ON c.id = e.customer_id "
                    "WHERE c.external_id = :x"
                ),
                {"x": CANARY},
            ).scalar_one()
            keys = connection.execute(text("SELECT count(*) FROM api_keys")).scalar_one()
    finally:
        engine.dispose()
    assert canary_rows == len(canary)
    assert keys == 1  # the client's own key: nothing truncated, nothing added
    summary = (await client.get(f"/v1/customers/{CANARY}")).json()["summary"]
    assert summary["event_count"] == len(canary)


STORABLE = [v for v in HOSTILE if "\u0000" not in v and "\ud800" not in v]


@pytest.mark.parametrize("value", STORABLE, ids=lambda v: repr(v)[:24])
async def test_free_text_is_stored_and_returned_verbatim(
    client: httpx.AsyncClient, value: str
) -> None:
    # Bound parameters, not SQL text: the value comes back byte for byte.
    properties = {"note": value[:2000], value[:100]: [value[:50]]}
    created = await client.post(
        "/v1/events", json=event("search", customer_id="verbatim", properties=properties)
    )
    assert created.status_code == 201, created.text
    listed = (await client.get("/v1/customers/verbatim/events")).json()["items"]
    assert listed[0]["properties"] == properties
    profile = {"acquisition_channel": value[:64], "attributes": {value[:100]: value[:2000]}}
    put = await client.put("/v1/customers/verbatim", json=profile)
    assert put.status_code == 200, put.text
    read = (await client.get("/v1/customers/verbatim")).json()
    assert (read["acquisition_channel"], read["attributes"]) == (
        profile["acquisition_channel"],
        profile["attributes"],
    )


def _nested(levels: int) -> dict[str, Any]:
    """A JSON object `levels` deep: {"k": {"k": ... {} }}."""
    document: dict[str, Any] = {}
    for _ in range(levels - 1):
        document = {"k": document}
    return document


def _of_size(size: int) -> dict[str, Any]:
    """A JSON object whose compact serialization is exactly `size` bytes (multibyte text)."""
    document = {"text": ""}
    while len(canonical_json(document).encode()) < size - 1:
        document["text"] += "é"  # two bytes each: bytes, not characters, are counted
    document["text"] += "x" * (size - len(canonical_json(document).encode()))
    assert len(canonical_json(document).encode()) == size
    return document


def _raw_event(properties_json: str) -> bytes:
    """An event whose properties are given as raw JSON text (for what json.dumps won't write)."""
    head = json.dumps(event("search", customer_id="limits"))[:-1]
    return f'{head}, "properties": {properties_json}}}'.encode()


@pytest.mark.parametrize(
    ("properties", "code"),
    [
        (_nested(8), None),
        (_nested(9), "too_deep"),
        (_nested(900), "too_deep"),  # used to be a RecursionError, a 500
        ({"list": [[[[[[[[1]]]]]]]]}, "too_deep"),  # lists count as levels too
        (_of_size(8192), None),
        (_of_size(8193), "too_large"),
        ({"k": "nul\u0000"}, "invalid_text"),
        ({"nul\u0000": 1}, "invalid_text"),
        ({"deep": {"er": ["\ud83d"]}}, "invalid_text"),
    ],
    ids=[
        "8-levels",
        "9-levels",
        "900-levels",
        "list-levels",
        "8192-B",
        "8193-B",
        "nul",
        "nul-key",
        "surrogate",
    ],
)
async def test_properties_and_attributes_boundaries(
    client: httpx.AsyncClient, properties: dict[str, Any], code: str | None
) -> None:
    single = await client.post(
        "/v1/events", **_json(event("search", customer_id="limits", properties=properties))
    )
    batch = await client.post(
        "/v1/events/batch",
        **_json({"events": [event("search", customer_id="limits", properties=properties)]}),
    )
    profile = await client.put("/v1/customers/limits", **_json({"attributes": properties}))
    if code is None:
        assert single.status_code == 201, single.text
        assert batch.json()["results"][0]["status"] == "created"
        assert profile.status_code == 200, profile.text
        return
    for response, errors in (
        (single, single.json().get("errors")),
        (profile, profile.json().get("errors")),
        (batch, batch.json()["results"][0]["error"]["errors"]),
    ):
        assert response.status_code in (200, 422), response.text
        assert [(e["field"].rsplit(".", 1)[-1], e["code"]) for e in errors] in (
            [("properties", code)],
            [("attributes", code)],
        )


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_non_finite_numbers_are_422_not_500(client: httpx.AsyncClient, number: str) -> None:
    # Python's JSON parser accepts these (1e400 becomes inf); Postgres jsonb does not.
    response = await client.post(
        "/v1/events",
        content=_raw_event(f'{{"n": {number}}}'),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "not_finite"
    amount = dict(event("order"), amount=0)
    raw = json.dumps(amount).replace('"amount": 0', f'"amount": {number}')
    refused = await client.post(
        "/v1/events", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "amount"


async def test_a_body_that_is_not_utf8_is_a_documented_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events",
        content=b'{"event_id": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    spec = (await client.get("/openapi.json")).json()
    assert "400" in spec["paths"]["/v1/events"]["post"]["responses"]


@pytest.mark.parametrize(
    "as_of", ["0001-01-01", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "1989-12-31"]
)
async def test_extreme_as_of_is_422_not_500(client: httpx.AsyncClient, as_of: str) -> None:
    await client.post("/v1/events", json=event("order", customer_id="when"))
    for url in ("/v1/customers/when/prediction", "/v1/customers/when/features"):
        response = await client.get(url, params={"as_of": as_of})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["errors"][0]["code"] == "invalid_as_of"
    batch = await client.post(
        "/v1/predictions/batch", json={"customer_ids": ["when"], "as_of": as_of}
    )
    assert batch.status_code == 422, batch.text
