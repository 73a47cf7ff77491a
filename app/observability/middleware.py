"""Per request: an X-Request-ID, one JSON access line, the HTTP metrics, and a 500 for crashes."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError, problem_response
from app.observability import metrics
from app.observability.logs import REQUEST_ID

access_log = logging.getLogger("clv.access")
error_log = logging.getLogger("clv.error")

REQUEST_ID_HEADER = b"x-request-id"
#: What a caller's id may look like; anything else is replaced (it ends up in logs and headers).
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
#: Label for requests no route matched (scanners must not create one series per path).
UNMATCHED = "<unmatched>"
#: Status recorded when the client went away before an answer (nginx's convention).
CLIENT_CLOSED = 499


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID when it is well-formed, else a fresh uuid4 hex."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestObservabilityMiddleware:
    """Outermost app middleware: ids, access log and metrics for every answer, errors included."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        id_header = (REQUEST_ID_HEADER, request_id.encode("latin-1"))
        id_token = REQUEST_ID.set(request_id)
        path_token = metrics.REQUEST_PATH.set(scope["path"])
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        metrics.HTTP_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Starlette's own 500 handler sits outside this middleware and would answer without
            # the request id (and let uvicorn log the stack a second time): answer here instead.
            error_log.error("unhandled error", exc_info=exc, extra=self._fields(scope))
            if status:  # the answer already started: uvicorn closes the connection
                raise
            await problem_response(AppError().problem(scope["path"]))(scope, receive, send_with_id)
        finally:
            metrics.HTTP_IN_PROGRESS.dec()
            elapsed = time.perf_counter() - started
            status = status or CLIENT_CLOSED
            route = self._route_of(scope)
            metrics.observe_request(scope["method"], route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client_ip": scope["client"][0] if scope.get("client") else None,
                    },
                )
            metrics.REQUEST_PATH.reset(path_token)
            REQUEST_ID.reset(id_token)

    def _route_of(self, scope: Scope) -> str:
        """The matched route's template (`/v1/customers/{customer_id}`), never the raw path."""
        route = scope.get("route")
        if route is None:
            # Answered before routing (413, 408 from the body limits): find the route it was for.
            for candidate in self.routes:
                if candidate.matches(scope)[0] is not Match.NONE:
                    route = candidate
                    break
        return getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED

    def _fields(self, scope: Scope) -> dict[str, object]:
        return {"method": scope["method"], "route": self._route_of(scope)}
