"""API keys: 401 without or with a bad key, 403 without the scope, immediate revocation, hashes only."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.auth.keys import generate_key, hash_key, parse_scopes, split_key, verify
from app.config import Settings
from app.db import sync_url
from app.main import create_app
from tests.conftest import api_key
from tests.factories import event
from tests.server import ROOT, running_server, server_env

PROBLEM = "application/problem+json"


@pytest.fixture
async def anonymous(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ROUTES = [
    ("POST", "/v1/events", event("session", customer_id="a")),
    ("POST", "/v1/events/batch", {"events": [event("session", customer_id="a")]}),
    ("PUT", "/v1/customers/a", {}),
    ("GET", "/v1/customers/a", None),
    ("GET", "/v1/customers/a/events", None),
    ("GET", "/v1/customers/a/features", None),
    ("GET", "/v1/customers/a/prediction", None),
    ("POST", "/v1/predictions/batch", {"customer_ids": ["a"]}),
    ("GET", "/v1/model", None),
    ("POST", "/v1/admin/model/reload", None),
    ("GET", "/v1/segments/active", None),
    ("DELETE", "/v1/customers/a", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_v1_route_needs_a_valid_key(
    anonymous: httpx.AsyncClient, settings: Settings, method: str, path: str, body: object
) -> None:
    valid = api_key(settings.database_url)
    wrong = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")
    unknown = generate_key().secret
    answers = []
    for headers in (
        {},
        auth("not-a-key"),
        auth(wrong),
        auth(unknown),
        {"Authorization": f"Basic {valid}"},
    ):
        response = await anonymous.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"].startswith("Bearer")
        answers.append({k: v for k, v in response.json().items() if k != "detail"})
    # No hint about which keys exist: an unknown key and a wrong secret answer alike.
    assert answers[2] == answers[3]


SCOPE_OF = {
    "/v1/events": "events:write",
    "/v1/events/batch": "events:write",
    "/v1/customers/a": "predictions:read",
    "/v1/customers/a/events": "predictions:read",
    "/v1/customers/a/features": "predictions:read",
    "/v1/customers/a/prediction": "predictions:read",
    "/v1/predictions/batch": "predictions:read",
    "/v1/model": "predictions:read",
    "/v1/admin/model/reload": "admin",
    "/v1/segments/active": "admin",
}


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_a_key_without_the_scope_is_403(
    anonymous: httpx.AsyncClient, settings: Settings, method: str, path: str, body: object
) -> None:
    needed = (
        "events:write"
        if method == "PUT"
        else "customers:erase"
        if method == "DELETE"
        else SCOPE_OF[path]
    )
    others = ",".join(
        s for s in ("events:write", "predictions:read", "customers:erase", "admin") if s != needed
    )
    response = await anonymous.request(
        method, path, json=body, headers=auth(api_key(settings.database_url, others))
    )
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM
    assert needed in response.json()["detail"]
    allowed = await anonymous.request(
        method, path, json=body, headers=auth(api_key(settings.database_url, needed))
    )
    assert allowed.status_code not in (401, 403), allowed.text


async def test_scoring_on_ingest_needs_both_scopes(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    writer = auth(api_key(settings.database_url, "events:write"))
    denied = await anonymous.post(
        "/v1/events?score=true", json=event("order", customer_id="w"), headers=writer
    )
    assert denied.status_code == 403
    assert "predictions:read" in denied.json()["detail"]
    both = auth(api_key(settings.database_url, "events:write,predictions:read"))
    scored = await anonymous.post(
        "/v1/events?score=true", json=event("order", customer_id="w"), headers=both
    )
    assert scored.status_code == 201
    assert scored.json()["prediction"]["customer_id"] == "w"


async def test_open_endpoints_stay_open(anonymous: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert (await anonymous.get(path)).status_code == 200, path


async def test_metrics_can_require_an_admin_key(settings: Settings) -> None:
    protected = settings.model_copy(update={"metrics_require_key": True})
    app = create_app(protected)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            assert (await client.get("/metrics")).status_code == 401
            reader = auth(api_key(settings.database_url, "predictions:read"))
            assert (await client.get("/metrics", headers=reader)).status_code == 403
            admin = auth(api_key(settings.database_url, "admin"))
            scraped = await client.get("/metrics", headers=admin)
            assert scraped.status_code == 200
            assert "clv_http_requests_total" in scraped.text


async def test_openapi_declares_the_bearer_scheme(anonymous: httpx.AsyncClient) -> None:
    spec = (await anonymous.get("/openapi.json")).json()
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            secured = any("ApiKey" in s for s in operation.get("security", []))
            assert secured == path.startswith("/v1"), (path, operation.get("operationId"))


async def test_only_a_hash_is_stored(settings: Settings) -> None:
    secret = api_key(settings.database_url, "admin", name="hash-check")
    engine = create_engine(sync_url(settings.database_url))
    with engine.connect() as connection:
        row = (
            connection.execute(text("SELECT * FROM api_keys WHERE name = 'hash-check'"))
            .mappings()
            .one()
        )
    engine.dispose()
    assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in row.values())
    assert row["prefix"] == split_key(secret)


def test_key_helpers() -> None:
    key = generate_key()
    assert verify(key.secret, key.key_hash)
    assert not verify(key.secret, hash_key("something else"))
    assert not verify(key.secret, None)
    assert split_key("clv_short_x") is None
    assert parse_scopes("all") == parse_scopes(
        "events:write predictions:read,customers:erase admin webhooks:admin"
    )
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes("events:read")


def clv(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={**os.environ, "CLV_DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_keys_cli_and_immediate_revocation_on_a_real_server(settings: Settings) -> None:
    created = clv(
        settings,
        "keys",
        "create",
        "--name",
        "storefront",
        "--scopes",
        "events:write,predictions:read",
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    listing = clv(settings, "keys", "list").stdout
    assert "storefront" in listing
    assert str(split_key(secret)) in listing
    assert secret not in listing
    with running_server(server_env(settings, auth=True)) as base:
        http = httpx.Client(base_url=base, headers=auth(secret))
        for _ in range(3):  # warm the per-worker key cache
            assert (
                http.post("/v1/events", json=event("session", customer_id="rv")).status_code == 201
            )
        revoked = clv(settings, "keys", "revoke", "storefront")
        assert revoked.returncode == 0, revoked.stderr
        # The very next request is refused: the revocation NOTIFY dropped the worker's cache.
        after = http.post("/v1/events", json=event("session", customer_id="rv"))
        assert after.status_code == 401, after.text
    assert "revoked" in clv(settings, "keys", "list").stdout or "-" in listing
    assert clv(settings, "keys", "revoke", "storefront").returncode == 2  # nothing active left


async def test_in_process_revocation_is_immediate(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    secret = api_key(settings.database_url, "predictions:read", name="short-lived")
    assert (await anonymous.get("/v1/model", headers=auth(secret))).status_code == 200
    assert clv(settings, "keys", "revoke", "short-lived").returncode == 0
    for _ in range(50):  # the NOTIFY arrives on the listener connection within milliseconds
        response = await anonymous.get("/v1/model", headers=auth(secret))
        if response.status_code == 401:
            break
    assert response.status_code == 401


def test_ensure_local_reuses_a_valid_key(settings: Settings, tmp_path: Path) -> None:
    file = tmp_path / "local-api-key"
    first = clv(settings, "keys", "ensure-local", "--file", str(file)).stdout.strip()
    again = clv(settings, "keys", "ensure-local", "--file", str(file)).stdout.strip()
    assert first == again == file.read_text().strip()
    assert oct(file.stat().st_mode)[-3:] == "600"
    clv(settings, "keys", "revoke", "local-dev")
    replaced = clv(settings, "keys", "ensure-local", "--file", str(file)).stdout.strip()
    assert replaced != first


async def test_disabled_auth_is_explicit_and_loud(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    open_app = create_app(settings.model_copy(update={"auth_disabled": True}))
    with caplog.at_level(logging.CRITICAL):
        async with open_app.router.lifespan_context(open_app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=open_app), base_url="http://t"
            ) as client:
                assert (await client.get("/v1/model")).status_code == 200
    assert any("AUTHENTICATION IS DISABLED" in r.getMessage() for r in caplog.records)
