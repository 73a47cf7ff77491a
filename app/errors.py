"""Errors as RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic_core import ErrorDetails
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
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(AppError().problem(request.url.path))


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
    app.add_exception_handler(Exception, _unhandled)


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
