"""Errors as RFC 9457 problem details (application/problem+json).

Over 400 lines because of PROBLEM_EXAMPLES: ~155 lines of OpenAPI example documents (data), kept
beside the Problem model they illustrate.
"""

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
    title: str = Field(examples=["Request validation failed"])
    status: int = Field(examples=[422])
    detail: str | None = Field(default=None, examples=["invalid field(s): amount"])
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


class MalformedJson(AppError):
    status, slug, title = 422, "malformed-json", "The body is not valid JSON"


#: pydantic's error types for "the body is not an object" (a list, a string, a number...).
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})


def _json_syntax_error(document: object, position: int, reason: str) -> MalformedJson:
    """A syntax error at line/column (1-based), not a byte offset posing as a field name."""
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    message = f"JSON syntax error at line {line}, column {column}: {reason}"
    return MalformedJson(
        message,
        errors=[FieldError(field="body", pointer="", message=message, code="json_invalid")],
    )


def _expected_shape(request: Request) -> str:
    """The top-level fields the route's body model requires, e.g. `{"events": [...]}`."""
    route = request.scope.get("route")
    body = getattr(route, "body_field", None)
    info = getattr(body, "field_info", None)
    model = getattr(info, "annotation", None)
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, dict):
        return "a JSON object"
    parts = []
    for name, info in fields.items():
        if not info.is_required():
            continue
        origin = getattr(info.annotation, "__origin__", None)
        parts.append(f'"{name}": [...]' if origin is list else f'"{name}": ...')
    return "{" + ", ".join(parts) + "}" if parts else "a JSON object"


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str | bytes):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = exc.errors()
    for detail in details:
        if detail.get("type") == "json_invalid":
            loc = detail.get("loc", ())
            position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
            reason = str((detail.get("ctx") or {}).get("error", "invalid JSON"))
            syntax = _json_syntax_error(exc.body, position, reason)
            return problem_response(syntax.problem(request.url.path))
        if tuple(detail.get("loc", ())) == ("body",) and detail.get("type") in _NOT_AN_OBJECT:
            shape = _expected_shape(request)
            message = (
                f"the body must be a JSON object {shape}, not {_json_kind(detail.get('input'))}"
            )
            error = InvalidInput(
                message,
                errors=[FieldError(field="body", pointer="", message=message, code="object_type")],
            )
            return problem_response(error.problem(request.url.path))
    errors = field_errors(details)
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


#: Real problem documents this API answers, by example name: the OpenAPI examples of every
#: error response. tests/test_openapi_examples.py provokes each one for real and compares.
PROBLEM_EXAMPLES: dict[str, dict[str, Any]] = {
    "bad-request": {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "There was an error parsing the body",
    },
    "unauthorized": {
        "type": PROBLEM_BASE + "unauthorized",
        "title": "Missing or invalid API key",
        "status": 401,
        "detail": "send an API key as `Authorization: Bearer <key>`",
    },
    "forbidden": {
        "type": PROBLEM_BASE + "forbidden",
        "title": "The API key lacks a required scope",
        "status": 403,
        "detail": "this operation needs the scope(s): predictions:read",
    },
    "not-found": {
        "type": PROBLEM_BASE + "not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no customer with id 'cust-404'",
    },
    "conflict": {
        "type": PROBLEM_BASE + "conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "event_id 'ord-1001' was already stored with different content; event ids are "
        "idempotency keys and cannot be reused",
    },
    "model-refused": {
        "type": PROBLEM_BASE + "model-refused",
        "title": "Model artifact refused",
        "status": 409,
        "detail": "the artifact was refused (ArtifactMismatch: model 20261130T071500Z-1a2b3c was "
        "trained on amounts in USD, this service runs in EUR (CLV_CURRENCY); train on this "
        "shop's history with `clv train`); still serving 20261124T175705Z-95b881",
    },
    "payload-too-large": {
        "type": PROBLEM_BASE + "payload-too-large",
        "title": "Request body too large",
        "status": 413,
        "detail": "2000000 bytes exceeds the limit of 1048576 bytes",
    },
    "unsupported-media-type": {
        "type": PROBLEM_BASE + "unsupported-media-type",
        "title": "Unsupported media type",
        "status": 415,
        "detail": "the body must be JSON sent with `Content-Type: application/json`; this request "
        "has Content-Type 'application/x-www-form-urlencoded' "
        "(e.g. curl -H 'Content-Type: application/json' -d '{...}')",
    },
    "invalid-amount": {
        "type": PROBLEM_BASE + "validation",
        "title": "Request validation failed",
        "status": 422,
        "detail": "invalid field(s): amount",
        "errors": [
            {
                "field": "amount",
                "pointer": "/amount",
                "message": "Input should be greater than or equal to 0",
                "code": "greater_than_equal",
            }
        ],
    },
    "invalid-customer-id": {
        "type": PROBLEM_BASE + "validation",
        "title": "Request validation failed",
        "status": 422,
        "detail": "invalid field(s): customer_id",
        "errors": [
            {
                "field": "customer_id",
                "pointer": "#path/customer_id",
                "message": "String should match pattern '^[A-Za-z0-9._:@-]{1,128}$'",
                "code": "string_pattern_mismatch",
            }
        ],
    },
    "invalid-as-of": {
        "type": PROBLEM_BASE + "validation",
        "title": "Request validation failed",
        "status": 422,
        "detail": "invalid field(s): as_of",
        "errors": [
            {
                "field": "as_of",
                "pointer": "#query/as_of",
                "message": "'2026-11-01T00:00:00 01:00' looks like an offset whose '+' arrived as "
                "a space: in a URL query a '+' means a space, so encode it as %2B "
                "(as_of=2026-11-01T00:00:00%2B01:00), or use Z",
                "code": "plus_not_encoded",
            }
        ],
    },
    "invalid-cursor": {
        "type": PROBLEM_BASE + "validation",
        "title": "Request validation failed",
        "status": 422,
        "detail": "cursor is not one this API issued",
        "errors": [
            {
                "field": "cursor",
                "pointer": "#query/cursor",
                "message": "invalid cursor",
                "code": "invalid_cursor",
            }
        ],
    },
    "batch-not-an-object": {
        "type": PROBLEM_BASE + "validation",
        "title": "Request validation failed",
        "status": 422,
        "detail": 'the body must be a JSON object {"events": [...]}, not an array',
        "errors": [
            {
                "field": "body",
                "pointer": "",
                "message": 'the body must be a JSON object {"events": [...]}, not an array',
                "code": "object_type",
            }
        ],
    },
    "malformed-json": {
        "type": PROBLEM_BASE + "malformed-json",
        "title": "The body is not valid JSON",
        "status": 422,
        "detail": "JSON syntax error at line 1, column 14: Expecting value",
        "errors": [
            {
                "field": "body",
                "pointer": "",
                "message": "JSON syntax error at line 1, column 14: Expecting value",
                "code": "json_invalid",
            }
        ],
    },
    "database-unavailable": {
        "type": PROBLEM_BASE + "database-unavailable",
        "title": "Database unavailable",
        "status": 503,
        "detail": "the database is unreachable or overloaded; retry later",
    },
    "model-unavailable": {
        "type": PROBLEM_BASE + "model-unavailable",
        "title": "No model loaded",
        "status": 503,
        "detail": "no model is loaded: ValueError: models/current does not exist: train a model "
        "(`clv train`)",
    },
}

#: The examples an error response shows unless the route names its own.
DEFAULT_EXAMPLES: dict[int, tuple[str, ...]] = {
    400: ("bad-request",),
    401: ("unauthorized",),
    403: ("forbidden",),
    404: ("not-found",),
    409: ("conflict",),
    413: ("payload-too-large",),
    415: ("unsupported-media-type",),
    422: ("invalid-customer-id",),
    503: ("database-unavailable",),
}


def problem_responses(
    *statuses: int, examples: dict[int, tuple[str, ...]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json for the given statuses, each with
    real examples (`examples` overrides the names from PROBLEM_EXAMPLES per status)."""
    chosen = {**DEFAULT_EXAMPLES, **(examples or {})}
    return {
        status: {
            "model": Problem,
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {
                        name: {
                            "summary": PROBLEM_EXAMPLES[name]["detail"].split(";")[0],
                            "value": PROBLEM_EXAMPLES[name],
                        }
                        for name in chosen[status]
                    },
                }
            },
            "description": _reason(status),
        }
        for status in statuses
    }
