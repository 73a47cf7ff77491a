"""app.limits overrides internals of uvicorn's HttpToolsProtocol (issue 15, docs/limits.md): these
tests fail loudly when uvicorn is not the release it was checked against, or when the overridden
hooks no longer do their job in a real uvicorn.Server over loopback (httptools is not pinned)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings
from app.limits import UVICORN_CHECKED, GuardedHttpToolsProtocol
from tests.server import ROOT

RECHECK = (
    f"app/limits.py's GuardedHttpToolsProtocol overrides uvicorn internals and was checked "
    f"against uvicorn {UVICORN_CHECKED} only: read it against the new HttpToolsProtocol, run "
    f"tests/ops/test_failures.py, then move the pin in pyproject.toml, uv.lock and "
    f"app.limits.UVICORN_CHECKED together (docs/limits.md)."
)
#: The HttpToolsProtocol methods GuardedHttpToolsProtocol overrides and calls through.
HOOKS = (
    "__init__",
    "connection_made",
    "connection_lost",
    "data_received",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
)
LIMIT = 4
#: Not a speed bound: a hook that stopped working would otherwise hang the test run.
HANG_GUARD = 30.0


def test_uvicorn_is_the_release_app_limits_was_checked_against() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("uvicorn")]
    locked = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    assert pins == [f"uvicorn[standard]=={UVICORN_CHECKED}"], RECHECK
    assert [p["version"] for p in locked if p["name"] == "uvicorn"] == [UVICORN_CHECKED], RECHECK
    assert importlib.metadata.version("uvicorn") == UVICORN_CHECKED, RECHECK


def test_the_overridden_hooks_are_httptools_protocol_methods_with_the_same_signature() -> None:
    for name in HOOKS:
        assert name in vars(HttpToolsProtocol), f"{name} is gone: {RECHECK}"
        ours = inspect.signature(getattr(GuardedHttpToolsProtocol, name))
        assert inspect.signature(getattr(HttpToolsProtocol, name)) == ours, f"{name}: {RECHECK}"
    assert issubclass(GuardedHttpToolsProtocol, HttpToolsProtocol)


class Holding:
    """ASGI app answering 200 with the path; /wait holds the request until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
        if scope["type"] != "http":
            return
        if scope["path"] == "/wait":
            await self.release.wait()
        body = scope["path"].encode()
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [length]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def short_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A head deadline and bound small enough to reach quickly."""
    monkeypatch.setenv("CLV_HTTP_HEADER_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("CLV_HTTP_MAX_HEADER_BYTES", "2048")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@asynccontextmanager
async def running(app: Holding) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """A real uvicorn.Server with the guarded protocol, as `clv serve` passes it; (server, port)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=GuardedHttpToolsProtocol,
        limit_concurrency=LIMIT,
        timeout_keep_alive=60,  # longer than the hang guard: only the override may close early
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, port
    finally:
        app.release.set()
        server.should_exit = True
        await task


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = b""
    try:
        async with asyncio.timeout(HANG_GUARD):
            while chunk := await reader.read(65536):
                answer += chunk
    except TimeoutError:
        raise AssertionError(f"{data[:60]!r}: still open, answered {answer!r}; {RECHECK}") from None
    finally:
        writer.close()
    return answer


def problem_type(answer: bytes) -> str:
    """The problem type of a raw problem+json answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), answer
    kind: str = json.loads(body)["type"]
    return kind


async def until(condition: Callable[[], bool]) -> None:
    """Wait (guarded) until `condition()` holds."""
    async with asyncio.timeout(HANG_GUARD):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.usefixtures("short_limits")
async def test_the_guarded_protocol_still_enforces_its_limits_on_this_uvicorn() -> None:
    app = Holding()
    async with running(app) as (server, port):
        served = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert served.startswith(b"HTTP/1.1 200 "), served
        assert served.endswith(b"/ok"), served

        huge = await exchange(port, b"GET /ok HTTP/1.1\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431 "), huge
        assert problem_type(huge).endswith("/headers-too-large")

        slow = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        assert slow.startswith(b"HTTP/1.1 408 "), slow
        assert problem_type(slow).endswith("/request-timeout")

        assert await exchange(port, b"") == b""  # an idle connection is closed, unanswered

        unread = b"GET /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nab"
        answered = await exchange(port, unread)  # closed after the answer, not kept waiting
        assert answered.startswith(b"HTTP/1.1 200 "), answered

        # Requests in flight fill the worker up to the limit; the next one gets a problem 503.
        await until(lambda: not server.server_state.connections)
        waiting = [
            asyncio.create_task(exchange(port, b"GET /wait HTTP/1.1\r\nConnection: close\r\n\r\n"))
            for _ in range(LIMIT - 1)
        ]
        await until(lambda: len(server.server_state.tasks) == LIMIT - 1)
        refused = await exchange(port, b"GET /ok HTTP/1.1\r\nX-Request-ID: over\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"retry-after: 1" in refused.lower()
        assert b"x-request-id: over" in refused.lower()
        assert problem_type(refused).endswith("/overloaded")
        app.release.set()
        for answer in await asyncio.gather(*waiting):
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert answer.endswith(b"/wait"), answer
