"""The single-prediction route's shortcut past FastAPI's dependency solver answers as FastAPI does.

A query string sends a request through FastAPI's general handler (`?explain=false` is the
default), so each pair below is the same request with and without the shortcut.
"""

from __future__ import annotations

from typing import Any

import httpx

from app.auth.dependencies import ANONYMOUS, predictions_reader
from app.config import Settings
from app.features.definitions import parse_as_of
from app.scoring.router import PredictionRoute, router, shortcut_applies
from tests.conftest import api_key, app_client
from tests.scoring.support import AS_OF, PREDICTION_FIELDS, offline_matrix

GENERAL = "?explain=false"
#: Headers that differ between any two answers.
PER_ANSWER = {"x-request-id", "content-length"}


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON, minus what differs between any two requests."""
    body = response.json()
    if response.status_code == 200:
        body = {k: v for k, v in body.items() if k not in ("as_of", "scored_at")}
    headers = {k: v for k, v in response.headers.items() if k not in PER_ANSWER}
    return response.status_code, headers, body


async def both(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, httpx.Response]:
    """The answer with the shortcut and the one through FastAPI's general handler."""
    answers = []
    for url in (path, path + GENERAL):
        request = client.build_request("GET", url)
        if headers is not None:
            del request.headers["authorization"]
            request.headers.update(headers)
        answers.append(await client.send(request))
    return answers[0], answers[1]


def test_the_prediction_route_takes_the_shortcut() -> None:
    # A parameter or dependency added to the endpoint turns the shortcut off: this says so.
    [route] = [r for r in router.routes if isinstance(r, PredictionRoute)]
    assert route.path == "/v1/customers/{customer_id}/prediction"
    assert shortcut_applies(route.dependant)


async def test_the_shortcut_answers_like_the_general_handler(
    demo_client: httpx.AsyncClient, demo_settings: Settings
) -> None:
    customer = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids[0]
    path = f"/v1/customers/{customer}/prediction"
    fast, general = await both(demo_client, path)
    assert fast.status_code == 200, fast.text
    assert set(fast.json()) == PREDICTION_FIELDS
    assert comparable(fast) == comparable(general)
    url = demo_settings.database_url
    cases: list[tuple[str, dict[str, str] | None, int]] = [
        ("/v1/customers/nobody-here/prediction", None, 404),
        (path, {}, 401),  # no Authorization header
        (path, {"Authorization": "Bearer clv_not-a-key"}, 401),
        (path, {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        (path, {"Authorization": f"Bearer {api_key(url, 'events:write')}"}, 403),
    ]
    for case_path, headers, status in cases:
        fast, general = await both(demo_client, case_path, headers)
        assert fast.status_code == status, (case_path, headers, fast.text)
        assert comparable(fast) == comparable(general), (case_path, headers)


async def test_dependency_overrides_still_apply(demo_settings: Settings) -> None:
    async with app_client(demo_settings) as client:
        transport = client._transport
        assert isinstance(transport, httpx.ASGITransport)
        app = transport.app
        app.dependency_overrides[predictions_reader] = lambda: ANONYMOUS  # type: ignore[attr-defined]
        request = client.build_request("GET", "/v1/customers/nobody-here/prediction")
        del request.headers["authorization"]
        # Without the override this is a 401; with it, the unknown customer's 404.
        assert (await client.send(request)).status_code == 404
