"""The ASGI application: create_app() wires settings, database, routers and error handling."""

from __future__ import annotations

import asyncio
import contextlib
import signal
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
from app.scoring.registry import ModelRegistry, ModelReloadFailed
from app.scoring.router import router as scoring_router

DESCRIPTION = """
Customer lifetime value (CLV) and churn probability, per customer, from the shop's event stream.

Send events (`POST /v1/events`), keep profiles (`PUT /v1/customers/{id}`), read them back.
Errors are RFC 9457 `application/problem+json` documents naming the offending field.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database (refusing one not at head), load the model, close both on shutdown."""
    settings: Settings = app.state.settings
    engine = create_async_db_engine(settings)
    registry = ModelRegistry(settings.model_dir, settings.onnx_threads)
    background: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    try:
        async with engine.connect() as connection:
            await connection.run_sync(check_at_head)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        # A missing or mismatched artifact leaves the worker alive but not ready (see /readyz).
        await asyncio.to_thread(registry.load_initial)
        app.state.registry = registry
        if settings.model_poll_seconds > 0:
            background.append(asyncio.create_task(registry.watch(settings.model_poll_seconds)))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                signal.SIGHUP,
                lambda: background.append(loop.create_task(_reload_quietly(registry))),
            )
        yield
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in background:
            task.cancel()
        await engine.dispose()


async def _reload_quietly(registry: ModelRegistry) -> None:
    """SIGHUP: reload `current`; a refused artifact is logged and the old model keeps serving."""
    with contextlib.suppress(ModelReloadFailed):
        await registry.reload()


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
    app.include_router(scoring_router)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is alive and serving HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness")
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the database answers within a second and a valid model is loaded."""
        checks: dict[str, Any] = {}
        registry: ModelRegistry = request.app.state.registry
        checks["model"] = (
            f"ok ({registry.active.version})"
            if registry.ready
            else f"unavailable: {registry.error}"
        )
        try:
            async with asyncio.timeout(1.0), request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"unavailable: {type(exc).__name__}"
        ready = checks["database"] == "ok" and registry.ready
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return app
