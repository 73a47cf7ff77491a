"""The ASGI application: create_app() wires settings, database, routers and error handling."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi_offline import FastAPIOffline

from app import __version__
from app.alerts.router import router as alerts_router
from app.auth.verifier import KeyVerifier
from app.campaigns.router import router as campaigns_router
from app.config import Settings, get_settings
from app.customers.router import router as customers_router
from app.db import create_async_db_engine, create_read_pool, session_factory
from app.errors import install_error_handlers
from app.events.router import router as events_router
from app.features.router import router as features_router
from app.limits import BodyLimitMiddleware
from app.observability import metrics
from app.observability.health import (
    NOT_READY_EXAMPLE,
    READY_EXAMPLE,
    Readiness,
    ReadinessProbe,
)
from app.observability.middleware import RequestObservabilityMiddleware
from app.quality.router import router as quality_router
from app.schema import check_at_head, head_revision
from app.scoring.registry import ModelRegistry, ModelReloadFailed
from app.scoring.router import router as scoring_router
from app.webhooks.background import DelivererThread
from app.webhooks.router import router as webhooks_router

logger = logging.getLogger(__name__)

DESCRIPTION = """
Customer lifetime value (CLV) and churn probability, per customer, from the shop's event stream.

Send events (`POST /v1/events`), keep profiles (`PUT /v1/customers/{id}`), read predictions
(`GET /v1/customers/{id}/prediction`). Every `/v1` route needs `Authorization: Bearer <key>` (keys
from `clv keys create`, with scopes; use the Authorize button). Errors are RFC 9457
`application/problem+json` documents naming the offending field.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database (refusing one not at head), load the model, close both on shutdown."""
    settings: Settings = app.state.settings
    engine = create_async_db_engine(settings)
    registry = ModelRegistry(settings.model_dir, settings.onnx_threads, settings.currency)
    background: list[asyncio.Task[None]] = []
    deliverer: DelivererThread | None = None
    loop = asyncio.get_running_loop()
    try:
        async with engine.connect() as connection:
            await connection.run_sync(check_at_head)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.read_pool = await create_read_pool(settings)
        app.state.keys = KeyVerifier(engine, app.state.read_pool, settings.database_url)
        await app.state.keys.start()
        if settings.auth_disabled:
            logger.critical(
                "AUTHENTICATION IS DISABLED (CLV_AUTH_DISABLED=true): every /v1 route is open to "
                "anyone who can reach this port, erasure and model reload included"
            )
        # A missing or mismatched artifact leaves the worker alive but not ready (see /readyz).
        await asyncio.to_thread(registry.load_initial)
        app.state.registry = registry
        app.state.readiness = ReadinessProbe(engine, registry, head_revision())
        if metrics.MULTIPROCESS:
            background.append(asyncio.create_task(metrics.refresh_gauges_forever(app.state)))
        if settings.model_poll_seconds > 0:
            background.append(asyncio.create_task(registry.watch(settings.model_poll_seconds)))
        if settings.webhooks_deliver_in_serve:
            # One deliverer per database is active (the others stand by), on a thread and
            # event loop of its own, with its own connections: it never holds up a request.
            deliverer = DelivererThread(settings)
            deliverer.start()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                signal.SIGHUP,
                lambda: background.append(loop.create_task(_reload_quietly(registry))),
            )
        # Everything loaded so far (libraries, app, model) lives as long as the worker: move it
        # out of the collector's sight so full collections stop rescanning it mid-request.
        gc.collect()
        gc.freeze()
        yield
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in background:
            task.cancel()
        if deliverer is not None:  # in-flight sends finish (bounded by their timeout)
            await asyncio.to_thread(deliverer.stop, settings.webhooks_timeout_seconds + 5)
        keys = getattr(app.state, "keys", None)
        if keys is not None:
            await keys.stop()
        read_pool = getattr(app.state, "read_pool", None)
        if read_pool is not None:
            await read_pool.close()
        await engine.dispose()
        metrics.worker_stopped()


async def _reload_quietly(registry: ModelRegistry) -> None:
    """SIGHUP: reload `current`; a refused artifact is logged and the old model keeps serving."""
    with contextlib.suppress(ModelReloadFailed):
        await registry.reload()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for the given settings (the environment's by default)."""
    settings = settings or get_settings()
    # FastAPIOffline: FastAPI whose /docs (Swagger UI) and /redoc pages load their scripts and
    # styles from the fastapi-offline package (served under /static-offline-docs), not from a
    # CDN, so the docs work on a laptop offline and in a container without egress alike.
    app = FastAPIOffline(
        title="clv-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        favicon_url="data:,",  # no favicon request at all
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout=settings.http_body_timeout_seconds,
    )
    # Added last, so outermost: it also sees (and tags) the limits' 413/408 answers.
    app.add_middleware(RequestObservabilityMiddleware, routes=app.routes)
    app.include_router(events_router)
    app.include_router(customers_router)
    app.include_router(features_router)
    app.include_router(scoring_router)
    app.include_router(alerts_router)
    app.include_router(webhooks_router)
    app.include_router(campaigns_router)
    app.include_router(quality_router)

    @app.get("/", include_in_schema=False)
    async def landing() -> RedirectResponse:
        """The interactive API docs are the front page."""
        return RedirectResponse("/docs", status_code=307)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is alive and serving HTTP."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness",
        response_model=Readiness,
        responses={
            200: {"model": Readiness, "content": {"application/json": {"example": READY_EXAMPLE}}},
            503: {
                "model": Readiness,
                "description": "Not ready: the database or the model is not usable (see `checks`).",
                "content": {"application/json": {"example": NOT_READY_EXAMPLE}},
            },
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the database answers within a second with its schema at head, and a valid model is loaded."""
        probe: ReadinessProbe = request.app.state.readiness
        ready, checks = await probe.check()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    app.add_route("/metrics", metrics.metrics_endpoint, include_in_schema=False)

    return app
