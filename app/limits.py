"""Request limits: body size and read time (Starlette has none), request head size and read
time and a problem+json 503 at the concurrency limit (uvicorn's httptools protocol has none), so
neither huge bodies nor slow clients can exhaust a worker."""

from __future__ import annotations

import asyncio
import logging
import uuid
from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import get_settings
from app.errors import (
    PROBLEM_BASE,
    PROBLEM_JSON,
    PayloadTooLarge,
    Problem,
    RequestTimeout,
    problem_response,
)
from app.observability import metrics
from app.observability.middleware import request_id_of

logger = logging.getLogger(__name__)

#: The uvicorn release GuardedHttpToolsProtocol was checked against (pinned in pyproject.toml).
#: It overrides internals of HttpToolsProtocol because no supported uvicorn setting or ASGI
#: middleware gives what it adds (measured in bench/http_limits.py, see docs/limits.md): a
#: deadline for the request head (uvicorn issue #157, `--timeout-request-start`, never built),
#: closing a connection that never sends a request, a 431 problem+json head bound (httptools has
#: none, h11's `h11_max_incomplete_event_size` answers a text/plain 400), and a problem+json 503
#: with Retry-After at `limit_concurrency` (uvicorn answers text/plain before any middleware runs).
#: tests/ops/test_uvicorn_internals.py fails loudly when the installed uvicorn is another release
#: or the overridden hooks change; check this class against the new HttpToolsProtocol, then bump.
UVICORN_CHECKED = "0.54.0"


class _TooLarge(Exception):
    """The streamed body passed the limit."""


class BodyLimitMiddleware:
    """Answer 413 problem+json when a request body exceeds `max_bytes`, declared or streamed, and
    408 when it does not arrive within `read_timeout` seconds (a client trickling a body)."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(scope, send, declared)
            return
        # Read the body up front (bounded in size and time) so chunked uploads are limited too.
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await self._read_body(receive)
        except _TooLarge:
            await self._reject(scope, send, None)
            return
        except TimeoutError:
            error = RequestTimeout(f"the request body did not arrive within {self.read_timeout} s")
            response = _problem_response(error, scope)
            await response(scope, _no_receive, send)
            return
        if body is None:  # the client went away
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _reject(self, scope: Scope, send: Send, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else "the streamed body"
        error = PayloadTooLarge(f"{size} exceeds the limit of {self.max_bytes} bytes")
        await _problem_response(error, scope)(scope, _no_receive, send)


def _problem_response(error: PayloadTooLarge | RequestTimeout, scope: Scope) -> JSONResponse:
    # The rest of the body is unread: the connection cannot carry another request.
    return problem_response(error.problem(scope.get("path")), {"Connection": "close"})


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's fast httptools protocol plus what it lacks: a deadline and a size bound for the
    request head (a slowloris client trickling headers, or megabytes of them, is cut off), no
    waiting for a body nobody reads, and a problem+json 503 with Retry-After when the worker's
    concurrency limit is reached.

    `clv serve` passes it to uvicorn as `http=`; limits come from the CLV_HTTP_* settings. It
    overrides uvicorn internals, so uvicorn is pinned to UVICORN_CHECKED (docs/limits.md). Since
    issue 15 the head bound also refuses a whole oversized head that arrives in one read (it was
    served before); the tests' observable answers are otherwise unchanged.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.head_timeout = settings.http_header_timeout_seconds
        self.max_head_bytes = settings.http_max_header_bytes
        # Checked here instead of by uvicorn, whose 503 is text/plain without Retry-After.
        self.concurrency_limit = self.limit_concurrency
        self.limit_concurrency = None
        self._reading_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            if self._head_timer is None:  # first bytes of the next request on a kept-alive one
                self._arm_head_timer()
            # Head bytes only: up to the blank line that ends the head when this chunk has it
            # (the rest may be body), so a whole oversized head arriving in one read is refused
            # too; the 3 bytes kept from the last chunk catch a blank line split between reads.
            window = self._head_tail + data
            end = window.find(b"\r\n\r\n")
            if end < 0:
                self._head_bytes += len(data)
                self._head_tail = window[-3:]
            else:
                self._head_bytes += end + 4 - len(self._head_tail)
                self._head_tail = b""
            if self._head_bytes > self.max_head_bytes:
                if not self.transport.is_closing():
                    self._refuse(
                        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "head_too_large",
                        f"the request line and headers exceed {self.max_head_bytes} bytes",
                    )
                return  # none of it reaches the parser
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._head_tail = b""
        self._cancel_head_timer()
        limit = self.concurrency_limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app, self.app = self.app, _overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True  # whatever comes next starts another request

    def on_response_complete(self) -> None:
        # Answered before the body was in (a GET with a body, an endpoint that ignores it):
        # uvicorn would keep the connection and wait, timer-less, for the rest of a body nobody
        # reads, so a client trickling it could hold the connection forever. Close instead.
        if not self.pipeline and self.cycle is not None and self.cycle.more_body:
            self.transport.close()
        super().on_response_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head behind a running request: check again later
        elif self._head_bytes:
            self._refuse(
                HTTPStatus.REQUEST_TIMEOUT,
                "head_timeout",
                f"the request head did not arrive within {self.head_timeout} s",
            )
        else:  # an idle connection that never started a request: just close it
            metrics.HTTP_REFUSALS.labels("idle_timeout").inc()
            self.transport.close()

    def _refuse(self, status: HTTPStatus, reason: str, detail: str) -> None:
        """Answer a request that never reached the app, then close the connection."""
        metrics.HTTP_REFUSALS.labels(reason).inc()
        request_id = uuid.uuid4().hex
        client = self.client[0] if self.client else None
        logger.warning(
            "request refused",
            extra={"reason": reason, "client_ip": client, "request_id": request_id},
        )
        slug = "request-timeout" if status == HTTPStatus.REQUEST_TIMEOUT else "headers-too-large"
        body = orjson.dumps(
            Problem(
                type=PROBLEM_BASE + slug, title=status.phrase, status=status, detail=detail
            ).model_dump(exclude_none=True)
        )
        self.transport.write(
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\n"
            f"x-request-id: {request_id}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()
        self._reading_head = False


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
    """503 problem+json for a request over the concurrency limit (it never reaches the app)."""
    metrics.HTTP_REFUSALS.labels("overloaded").inc()
    problem = Problem(
        type=PROBLEM_BASE + "overloaded",
        title="Service Unavailable",
        status=503,
        detail="this worker is at its concurrency limit; retry shortly",
        instance=scope.get("path"),
    )
    body = orjson.dumps(problem.model_dump(exclude_none=True))
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"x-request-id", request_id_of(scope).encode("latin-1")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
