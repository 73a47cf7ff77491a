"""`clv migrate` and `clv serve`: the database schema and the HTTP API process."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Annotated

import typer

from app.cli.common import fail
from app.config import get_settings


def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to REVISION instead.")] = False,
) -> None:
    """Apply the Alembic migrations to CLV_DATABASE_URL (alembic upgrade head)."""
    from app import schema

    settings = get_settings()
    (schema.downgrade if down else schema.upgrade)(revision, settings)
    typer.echo(f"database {_safe_url(settings.database_url)} is at {revision}")


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [CLV_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [CLV_PORT].")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes [CLV_WORKERS].")
    ] = None,
    keepalive_timeout: Annotated[
        int | None,
        typer.Option(min=1, help="Seconds an idle keep-alive connection stays open."),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxies trusted for X-Forwarded-For/-Proto (IPs, CIDRs or *)."),
    ] = None,
    proxy_headers: Annotated[
        bool | None,
        typer.Option("--proxy-headers/--no-proxy-headers", help="Honour X-Forwarded-*."),
    ] = None,
    graceful_shutdown: Annotated[
        int | None,
        typer.Option(min=1, help="Seconds in-flight requests get to finish after SIGTERM."),
    ] = None,
    limit_concurrency: Annotated[
        int | None,
        typer.Option(min=0, help="Connections + requests per worker before 503 (0 = no limit)."),
    ] = None,
    backlog: Annotated[int | None, typer.Option(min=1, help="TCP listen backlog.")] = None,
) -> None:
    """Serve the HTTP API with uvicorn (refuses a database that is not migrated).

    Every option defaults to its CLV_* setting (CLV_HOST, CLV_PORT, CLV_WORKERS,
    CLV_KEEPALIVE_TIMEOUT_SECONDS, CLV_FORWARDED_ALLOW_IPS, CLV_PROXY_HEADERS,
    CLV_GRACEFUL_SHUTDOWN_SECONDS, CLV_LIMIT_CONCURRENCY, CLV_BACKLOG).
    """
    settings = get_settings()
    workers = workers or settings.workers
    # Before anything imports prometheus_client: it picks its storage from this at import time.
    owned_metrics_dir = _prepare_metrics_dir(workers)
    try:
        import uvicorn

        from app.db import create_sync_engine
        from app.observability.logs import logging_config
        from app.schema import SchemaNotAtHead, check_at_head

        engine = create_sync_engine(settings)
        try:
            with engine.connect() as connection:
                check_at_head(connection)
        except SchemaNotAtHead as exc:
            raise fail(str(exc)) from exc
        finally:
            engine.dispose()
        limit = settings.limit_concurrency if limit_concurrency is None else limit_concurrency
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host or settings.host,
            port=settings.port if port is None else port,
            workers=workers,
            # httptools plus a head deadline/size bound and a problem+json 503; a subclass of
            # uvicorn internals, pinned and tested (docs/limits.md says why no setting does it).
            http="app.limits:GuardedHttpToolsProtocol",
            log_config=logging_config(settings.log_level),
            log_level=settings.log_level,
            access_log=False,  # app.observability writes one JSON line per request instead
            proxy_headers=settings.proxy_headers if proxy_headers is None else proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips or settings.forwarded_allow_ips,
            timeout_keep_alive=keepalive_timeout or settings.keepalive_timeout_seconds,
            timeout_graceful_shutdown=graceful_shutdown or settings.graceful_shutdown_seconds,
            limit_concurrency=limit or None,
            backlog=backlog or settings.backlog,
            # uvicorn's 5 s default is shorter than a worker's start (imports, model warm-up), so
            # SIGHUP's rolling restart would give up and keep the old workers.
            timeout_worker_healthcheck=settings.worker_healthcheck_seconds,
            server_header=False,
        )
    finally:
        if owned_metrics_dir is not None:
            shutil.rmtree(owned_metrics_dir, ignore_errors=True)


def _prepare_metrics_dir(workers: int) -> str | None:
    """Multiprocess metrics for several workers: the shared directory, emptied of earlier runs.

    Returns the directory when it is a temporary one this process made (and removes afterwards).
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    owned = None
    if not directory:
        if workers == 1:
            return None  # one process: plain in-memory metrics
        directory = owned = tempfile.mkdtemp(prefix="clv-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # inherited by the workers
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):  # samples of an earlier run would be added to this one's
            os.remove(os.path.join(directory, name))
    return owned


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
