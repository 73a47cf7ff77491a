"""Errors as RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic_core import ErrorDetails
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://clv-service.dev/problems/"
logger = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One offending input field."""

    field: str = Field(description="Dotted path of the field, e.g. `amount` or `events.3.amount`.")
    pointer: str = Field(description="JSON Pointer (RFC 6901) into the request body or query.")
    message: str
    code: str = Field(
        description="Machine-readable error kind, e.g. `missing`, `decimal_max_places`."
    )


class Problem(BaseModel):
    """RFC 9457 problem details, with the offending fields when input was rejected."""

    type: str = Field(examples=[PROBLEM_BASE + "validation"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class AppError(Exception):
    """An error the API reports to its caller as a problem document."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers

    def problem(self, instance: str | None = None) -> Problem:
        """The problem document for this error."""
        return Problem(
            type=PROBLEM_BASE + self.slug,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )


class InvalidInput(AppError):
    status, slug, title = 422, "validation", "Request validation failed"


class NotFound(AppError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(AppError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class RequestTimeout(AppError):
    status, slug, title = 408, "request-timeout", "Request body not received in time"


class DatabaseUnavailable(AppError):
    status, slug, title = 503, "database-unavailable", "Database unavailable"


#: Seconds a client should wait before retrying when the database is unavailable.
DATABASE_RETRY_AFTER = 5
#: SQLSTATEs meaning "the database cannot serve now", not "this request is wrong": connection
#: exceptions (class 08), insufficient resources (53), shutdown / not accepting connections,
#: statement timeout, and deadlock / serialization failures that survived the service's retries.
_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "57014", "40001", "40P01"})
#: Modules whose OSError (refused connection, connect timeout, DNS) means the database is away.
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite", "psycopg")


def is_database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database is unreachable, overloaded or restarting."""
    if isinstance(exc, PoolTimeout):  # no pooled connection freed up in pool_timeout
        return True
    if isinstance(exc, DBAPIError):
        # connection_invalidated: the driver saw the connection die (SQLAlchemy then recycles
        # the whole pool, so the next request reconnects).
        return exc.connection_invalidated or _unavailable_state(exc.orig)
    if isinstance(exc, asyncpg.PostgresError):  # the raw asyncpg read pool, unwrapped
        return _unavailable_state(exc)
    if isinstance(exc, asyncpg.InterfaceError):  # "connection is closed", "pool is closing"
        return "clos" in str(exc)
    if isinstance(exc, OSError):  # asyncpg raises connect failures unwrapped
        traceback = exc.__traceback__
        while traceback is not None:
            module = traceback.tb_frame.f_globals.get("__name__", "")
            if module.startswith(_DRIVER_MODULES):
                return True
            traceback = traceback.tb_next
    return False


def _unavailable_state(error: object) -> bool:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return isinstance(state, str) and (
        state.startswith(_UNAVAILABLE_CLASSES) or state in _UNAVAILABLE_STATES
    )


def pointer_for(loc: Iterable[int | str]) -> tuple[str, str]:
    """(dotted field, JSON pointer) for a pydantic error location, without the `body` prefix."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, parts = parts[0], parts[1:]
    else:
        where = "body"
    field = ".".join(parts) if parts else where
    escaped = [p.replace("~", "~0").replace("/", "~1") for p in parts]
    pointer = "/" + "/".join(escaped) if escaped else ""
    if where != "body":
        pointer = f"#{where}{pointer}"
    return field, pointer or "/"


def field_errors(
    details: Iterable[ErrorDetails | dict[str, Any]], prefix: Sequence[int | str] = ()
) -> list[FieldError]:
    """FieldErrors from pydantic error details, their locations prefixed."""
    out = []
    for detail in details:
        loc = [*prefix, *detail["loc"]]
        field, pointer = pointer_for(loc)
        message = str(detail["msg"]).removeprefix("Value error, ")
        out.append(
            FieldError(field=field, pointer=pointer, message=message, code=str(detail["type"]))
        )
    return out


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSONResponse with the problem+json media type."""
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(exc.problem(request.url.path), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    names = ", ".join(sorted({e.field for e in errors}))
    problem = InvalidInput(f"invalid field(s): {names}", errors=errors).problem(request.url.path)
    return problem_response(problem)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    problem = Problem(
        type="about:blank",
        title=_reason(exc.status_code),
        status=exc.status_code,
        detail=str(exc.detail) if exc.detail else None,
        instance=request.url.path,
    )
    return problem_response(problem, dict(exc.headers) if exc.headers else None)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """A database error that is not an outage: a 500, logged with its stack."""
    # The route template, never the raw path: paths carry customer ids, which stay out of logs.
    route = getattr(request.scope.get("route"), "path", "<unmatched>")
    logger.exception("unhandled error on %s %s", request.method, route, exc_info=exc)
    return problem_response(AppError().problem(request.url.path))


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        return await _unhandled(request, exc)
    # One line, no stack: an outage produces thousands of these and the cause is not in our code.
    logger.warning("database unavailable: %s", type(exc).__name__)
    error = DatabaseUnavailable(
        "the database is unreachable or overloaded; retry later",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
    )
    return problem_response(error.problem(request.url.path), error.headers)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through problem+json."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database trouble is 503 + Retry-After; anything else of these types stays a 500.
    for kind in (DBAPIError, PoolTimeout, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        app.add_exception_handler(kind, _database_error)
    # Any other exception is answered (500 problem+json, logged once with its stack) by
    # RequestObservabilityMiddleware, which sees it before Starlette's outermost handler would.


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json for the given statuses."""
    return {
        status: {
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "description": _reason(status),
        }
        for status in statuses
    }
