"""The ASGI application: create_app() wires settings, database, routers and error handling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import __version__
from app.config import Settings, get_settings
from app.customers.router import router as customers_router
from app.db import create_async_db_engine, session_factory
from app.errors import install_error_handlers
from app.events.router import router as events_router
from app.features.router import router as features_router
from app.limits import BodyLimitMiddleware
from app.schema import check_at_head

DESCRIPTION = """
Customer lifetime value (CLV) and churn probability, per customer, from the shop's event stream.

Send events (`POST /v1/events`), keep profiles (`PUT /v1/customers/{id}`), read them back.
Errors are RFC 9457 `application/problem+json` documents naming the offending field.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database (refusing one whose schema is not at head) and close it on shutdown."""
    settings: Settings = app.state.settings
    engine = create_async_db_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(check_at_head)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        yield
    finally:
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for the given settings (the environment's by default)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="clv-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(events_router)
    app.include_router(customers_router)
    app.include_router(features_router)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is alive and serving HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness")
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the database answers within a second."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(1.0), request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return app
