"""Prometheus metrics, exposed on /metrics.

One process (`clv serve --workers 1`) keeps its metrics in memory. With several uvicorn workers
every worker is a process of its own and a scrape reaches one of them at random, so `clv serve`
turns on prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`): each worker writes
its samples to memory-mapped files there and whichever worker answers /metrics sums them all.
The mode is fixed when prometheus_client is first imported, hence this module reads the
environment at import time and nothing may import prometheus_client earlier in a worker.

Hot path: label sets are small and fixed (method x route template x status), labelled children
are cached in dicts, and a batch of scores is folded into the histograms with one increment per
bucket instead of one observation per row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

from app.events.models import EventType

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Decided once: prometheus_client picks its value storage (memory or mmap files) at import.
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_ENV))
#: How often each worker copies its pool and model state into the shared files (multiprocess).
GAUGE_REFRESH_SECONDS = 2.0

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: Request latencies: the prediction endpoint answers in about a millisecond.
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_CHURN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_CLV_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)

HTTP_REQUESTS = Counter(
    "clv_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "clv_http_request_duration_seconds",
    "Time from the request reaching the app to the end of its response.",
    ["method", "route", "status"],
    buckets=_REQUEST_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "clv_http_requests_in_progress",
    "Requests being processed now (summed over workers).",
    multiprocess_mode="livesum",
)
HTTP_REFUSALS = Counter(
    "clv_http_refusals",
    "Requests refused before reaching the app, by reason: overloaded (503, CLV_LIMIT_CONCURRENCY), "
    "head_timeout (408), head_too_large (431), idle_timeout (connection without a request).",
    ["reason"],
)
FEATURE_FETCH = Histogram(
    "clv_feature_fetch_duration_seconds",
    "Time to compute feature vectors from the database, by endpoint kind.",
    ["kind"],
    buckets=_STEP_BUCKETS,
)
INFERENCE = Histogram(
    "clv_model_inference_duration_seconds",
    "Time to score feature vectors (ONNX runs, segments), by endpoint kind.",
    ["kind"],
    buckets=_STEP_BUCKETS,
)
PREDICTIONS = Counter(
    "clv_predictions",
    "Predictions served, by endpoint kind: single, batch, ingest (events with score=true).",
    ["kind"],
)
FEATURE_OUT_OF_RANGE = Counter(
    "clv_feature_out_of_range",
    "Predictions served with a feature outside the model's training range (manifest "
    "feature_ranges), by feature name (the model's fixed feature list).",
    ["feature"],
)
CHURN_SERVED = Histogram(
    "clv_predicted_churn_probability",
    "Churn probabilities served.",
    buckets=_CHURN_BUCKETS,
)
CLV_SERVED = Histogram(
    "clv_predicted_clv",
    "CLV values served, in the service currency.",
    buckets=_CLV_BUCKETS,
)
EVENTS = Counter(
    "clv_events_ingested",
    "Events received by the API, by type and outcome (created, duplicate, rejected).",
    ["type", "status"],
)
MODEL_INFO = Gauge(
    "clv_model_info",
    "1 for the model version being served (a version any live worker serves).",
    ["version"],
    multiprocess_mode="livemax",
)
MODEL_AGE = Gauge(
    "clv_model_age_seconds",
    "Seconds since the served model was trained (the oldest any live worker serves).",
    multiprocess_mode="livemax",
)
MODEL_LOADED = Gauge(
    "clv_model_loaded",
    "1 when a model is loaded (0 when any live worker has none).",
    multiprocess_mode="livemin",
)
DB_POOL_IN_USE = Gauge(
    "clv_db_pool_connections_in_use",
    "Database connections checked out, by pool: main (SQLAlchemy), read (asyncpg); summed over workers.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_IDLE = Gauge(
    "clv_db_pool_connections_idle",
    "Open database connections waiting in the pool, by pool; summed over workers.",
    ["pool"],
    multiprocess_mode="livesum",
)

#: The raw path of the request being served, to tell predictions made while ingesting.
REQUEST_PATH: ContextVar[str] = ContextVar("clv_request_path", default="")

_KNOWN_EVENT_TYPES = frozenset(t.value for t in EventType)
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_kind_children: dict[tuple[int, str], Any] = {}
_shown_version: str | None = None


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        labels = (method, route, str(status))
        children = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def _child(metric: Any, kind: str) -> Any:
    key = (id(metric), kind)
    child = _kind_children.get(key)
    if child is None:
        child = _kind_children[key] = metric.labels(kind)
    return child


def prediction_kind(default: str) -> str:
    """`ingest` for predictions made by the events endpoints (`score=true`), else `default`."""
    return "ingest" if REQUEST_PATH.get().startswith("/v1/events") else default


def observe_steps(kind: str, feature_fetch: float, inference: float | None = None) -> None:
    """Record one request's feature-fetch and (when it got that far) inference seconds: the
    single-prediction path, without two context managers per request."""
    kind = prediction_kind(kind)
    _child(FEATURE_FETCH, kind).observe(feature_fetch)
    if inference is not None:
        _child(INFERENCE, kind).observe(inference)


@contextmanager
def time_feature_fetch(kind: str) -> Iterator[None]:
    """Observe the duration of the block as feature-fetch latency."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _child(FEATURE_FETCH, prediction_kind(kind)).observe(time.perf_counter() - started)


@contextmanager
def time_inference(kind: str) -> Iterator[None]:
    """Observe the duration of the block as model-inference latency."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _child(INFERENCE, prediction_kind(kind)).observe(time.perf_counter() - started)


def observe_scores(kind: str, clv: Sequence[float], churn: Sequence[float]) -> None:
    """Count served predictions and add their values to the distribution histograms."""
    if not clv:
        return
    _child(PREDICTIONS, prediction_kind(kind)).inc(len(clv))
    if len(clv) == 1:
        CLV_SERVED.observe(clv[0])
        CHURN_SERVED.observe(churn[0])
        return
    observe_many(CLV_SERVED, np.asarray(clv, dtype=np.float64))
    observe_many(CHURN_SERVED, np.asarray(churn, dtype=np.float64))


def observe_out_of_range(counts: dict[str, int]) -> None:
    """Count served predictions whose feature lay outside the training range, per feature."""
    for feature, count in counts.items():
        FEATURE_OUT_OF_RANGE.labels(feature).inc(count)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Histogram.observe for every value, with one increment per bucket instead of per value."""
    # Histogram.observe puts a value in the first bucket whose upper bound is >= the value.
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))


def observe_events(outcomes: Iterable[tuple[object, str]]) -> None:
    """Count ingested events by (type, status); unknown types are `invalid` (bounded labels)."""
    tally = Tally(
        (str(kind) if isinstance(kind, str) and kind in _KNOWN_EVENT_TYPES else "invalid", status)
        for kind, status in outcomes
    )
    for (kind, status), count in tally.items():
        EVENTS.labels(kind, status).inc(count)


def refresh_worker_gauges(state: Any) -> None:
    """Copy this worker's pool and model state (an app.state) into the gauges."""
    global _shown_version
    engine = getattr(state, "engine", None)
    pool = engine.sync_engine.pool if engine is not None else None
    if pool is not None and hasattr(pool, "checkedout"):  # QueuePool; SQLite may use others
        DB_POOL_IN_USE.labels("main").set(pool.checkedout())
        DB_POOL_IDLE.labels("main").set(pool.checkedin())
    read_pool = getattr(state, "read_pool", None)
    if read_pool is not None:  # asyncpg.Pool
        idle = read_pool.get_idle_size()
        DB_POOL_IN_USE.labels("read").set(read_pool.get_size() - idle)
        DB_POOL_IDLE.labels("read").set(idle)
    registry = getattr(state, "registry", None)
    if registry is None:
        return
    version = registry.active.version if registry.ready else None
    if version != _shown_version:
        if _shown_version is not None:
            MODEL_INFO.labels(_shown_version).set(0)
            if not MULTIPROCESS:  # the mmap files cannot drop a series; 0 marks it retired
                MODEL_INFO.remove(_shown_version)
        if version is not None:
            MODEL_INFO.labels(version).set(1)
        _shown_version = version
    MODEL_LOADED.set(1 if version is not None else 0)
    if version is not None:
        created = registry.active.manifest.created_at
        MODEL_AGE.set((dt.datetime.now(dt.UTC) - created).total_seconds())


async def refresh_gauges_forever(state: Any) -> None:
    """Multiprocess mode: keep this worker's gauges current for scrapes other workers answer."""
    while True:
        refresh_worker_gauges(state)
        await asyncio.sleep(GAUGE_REFRESH_SECONDS)


def worker_stopped() -> None:
    """Drop this worker's live gauges from the shared files (multiprocess mode)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """The Prometheus text exposition of every metric (all workers' in multiprocess mode)."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus scrape endpoint (an `admin` key required when CLV_METRICS_REQUIRE_KEY is set)."""
    if request.app.state.settings.metrics_require_key:
        from fastapi.security import HTTPAuthorizationCredentials

        from app.auth.dependencies import bearer, require
        from app.auth.keys import Scope
        from app.errors import AppError, problem_response

        credentials: HTTPAuthorizationCredentials | None = await bearer(request)
        try:
            await require(Scope.admin)(request, credentials)
        except AppError as exc:
            return problem_response(exc.problem(request.url.path), exc.headers)
    refresh_worker_gauges(request.app.state)
    # Merging the workers' files reads them all: keep that off the event loop.
    body = await asyncio.to_thread(exposition) if MULTIPROCESS else exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
