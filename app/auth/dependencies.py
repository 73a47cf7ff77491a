"""FastAPI dependencies enforcing `Authorization: Bearer <key>` with scopes on every /v1 route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.keys import ALL_SCOPES, Scope
from app.auth.verifier import KeyVerifier, Principal
from app.errors import AppError

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `clv keys create`, sent as `Authorization: Bearer clv_...`.",
)
ANONYMOUS = Principal(key_id=0, name="auth-disabled", prefix="-", scopes=ALL_SCOPES)


class Unauthorized(AppError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(AppError):
    status, slug, title = 403, "forbidden", "The API key lacks a required scope"


def require(*scopes: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys that carry every one of `scopes`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if request.app.state.settings.auth_disabled:
            return ANONYMOUS
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized(
                "send an API key as `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": 'Bearer realm="clv"'},
            )
        verifier: KeyVerifier = request.app.state.keys
        principal = await verifier.principal(credentials.credentials)
        if principal is None:
            # Deliberately the same answer for unknown, malformed, wrong and revoked keys.
            raise Unauthorized(
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="clv", error="invalid_token"'},
            )
        missing = sorted(s.value for s in set(scopes) - principal.scopes)
        if missing:
            raise Forbidden(f"this operation needs the scope(s): {', '.join(missing)}")
        request.state.principal = principal
        return principal

    return dependency


def require_scope(principal: Principal, scope: Scope) -> None:
    """Forbidden unless the principal also holds `scope` (for options that widen an operation)."""
    if scope not in principal.scopes:
        raise Forbidden(f"this operation needs the scope(s): {scope.value}")


EventsWriter = Annotated[Principal, Depends(require(Scope.events_write))]
#: The dependency behind `PredictionsReader`, callable directly (the prediction route's fast path).
predictions_reader = require(Scope.predictions_read)
PredictionsReader = Annotated[Principal, Depends(predictions_reader)]
CustomerEraser = Annotated[Principal, Depends(require(Scope.customers_erase))]
Admin = Annotated[Principal, Depends(require(Scope.admin))]
WebhooksAdmin = Annotated[Principal, Depends(require(Scope.webhooks_admin))]
