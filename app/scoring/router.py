"""HTTP endpoints for predictions and the model."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data

from app.auth.dependencies import Admin, PredictionsReader, bearer, predictions_reader
from app.config import Settings, SettingsDep
from app.content import JsonBody
from app.db import ReaderDep, SessionDep, read_connection
from app.errors import FieldError, InvalidInput, NotFound, problem_responses
from app.features.as_of import AsOfQuery, resolve_as_of
from app.ids import CustomerIdPath
from app.scoring.lifecycle import LifecycleStage, ValueTier
from app.scoring.registry import LoadedModel, ModelRegistry
from app.scoring.repository import ScoreRepository
from app.scoring.schemas import (
    BATCH_PREDICTION_EXAMPLE,
    PREDICTION_EXAMPLE,
    BatchPredictionIn,
    BatchPredictionOut,
    ModelOut,
    PredictionOut,
    ScoreRunOut,
    SegmentMember,
    SegmentPage,
)
from app.scoring.service import PredictionService

router = APIRouter(tags=["predictions"])


async def registry_of(request: Request) -> ModelRegistry:
    """The worker's model registry."""
    registry: ModelRegistry = request.app.state.registry
    return registry


async def active_model(request: Request) -> LoadedModel:
    """The model this request uses from start to end (503 when none is loaded)."""
    registry: ModelRegistry = request.app.state.registry
    return registry.active


RegistryDep = Annotated[ModelRegistry, Depends(registry_of)]
ModelDep = Annotated[LoadedModel, Depends(active_model)]


async def get_prediction(
    request: Request,
    _auth: PredictionsReader,
    customer_id: CustomerIdPath,
    as_of: AsOfQuery = None,
    explain: Annotated[
        bool,
        Query(
            description="Add exact per-feature reasons (TreeSHAP; coefficients for a linear "
            "challenger; 422 explanation-unavailable for an MLP)."
        ),
    ] = False,
) -> Response:
    """CLV over the model's horizon, churn probability, segment and expected value at risk, from the customer's events up to `as_of` (default now)."""
    # The hot path: settings, model and read connection come straight from app.state instead
    # of three more FastAPI dependencies (a generator one among them), which cost about a
    # tenth of a prediction's CPU time (BENCHMARKS.md, "A hot path that does not grow").
    state = request.app.state
    settings: Settings = state.settings
    registry: ModelRegistry = state.registry
    model = registry.active  # 503 model-unavailable
    moment = resolve_as_of(as_of, max_skew=settings.max_future_skew)
    pool: asyncpg.Pool | None = getattr(state, "read_pool", None)
    if pool is not None:  # Postgres: straight from the asyncpg pool
        async with pool.acquire() as connection:
            prediction = await PredictionService(connection, settings, model).one(
                customer_id, moment, explain
            )
    else:
        async with read_connection(state) as reader:
            prediction = await PredictionService(reader, settings, model).one(
                customer_id, moment, explain
            )
    # Serialised once here; FastAPI would validate and serialise the model a second time.
    return Response(prediction.model_dump_json(exclude_none=True), media_type="application/json")


#: Customer ids the fast path takes: a subset of `app.ids.ID_PATTERN` (all the others, and
#: every id FastAPI would refuse, go through FastAPI's own validation).
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class PredictionRoute(APIRoute):
    """The single-prediction route, with a shortcut past FastAPI's dependency solver.

    A request without a query string and with a plain customer id can fail no parameter
    validation (`as_of` and `explain` take their defaults), so the route calls the same auth
    dependency and the same endpoint function itself: FastAPI's `solve_dependencies` cost
    about a tenth of the request's CPU (BENCHMARKS.md, "hot-path-2"). Every other request
    (a query string, an id FastAPI might refuse, telemetry on) takes the general handler, so
    errors and their problem documents stay exactly FastAPI's, and so do dependency overrides.
    Exceptions from the shortcut (401/403, 404, 503) reach the same exception handlers.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        general = super().get_route_handler()
        # Under include_router FastAPI builds the handler inside the inclusion's context, whose
        # dependant carries the router's own dependencies too: check that one.
        context = fastapi_routing._effective_route_context_var.get()
        route = context if context is not None and context.original_route is self else self
        if not shortcut_applies(route.dependant):
            return general

        async def handler(request: Request) -> Response:
            customer_id = request.path_params.get("customer_id")
            if (
                request.scope["query_string"]
                or not isinstance(customer_id, str)
                or _PLAIN_ID.fullmatch(customer_id) is None
                or getattr(request.app, "dependency_overrides", None)
                or get_telemetry_data() is not None
            ):
                return await general(request)
            principal = await predictions_reader(request, await bearer(request))
            return await get_prediction(request, principal, customer_id)

        return handler


def shortcut_applies(dependant: Dependant) -> bool:
    """Whether the endpoint has exactly the parameters `PredictionRoute`'s shortcut fills in."""
    return (
        dependant.call is get_prediction
        and [d.call for d in dependant.dependencies] == [predictions_reader]
        and [p.name for p in dependant.path_params] == ["customer_id"]
        and sorted(p.name for p in dependant.query_params) == ["as_of", "explain"]
        and not dependant.header_params
        and not dependant.cookie_params
        and not dependant.body_params
    )


router.add_api_route(
    "/v1/customers/{customer_id}/prediction",
    get_prediction,
    methods=["GET"],
    response_model=PredictionOut,
    response_model_exclude_none=True,
    responses={
        200: {"content": {"application/json": {"example": PREDICTION_EXAMPLE}}},
        **problem_responses(
            401,
            403,
            404,
            422,
            503,
            examples={
                422: ("invalid-customer-id", "invalid-as-of", "explanation-unavailable"),
                503: ("model-unavailable", "database-unavailable"),
            },
        ),
    },
    summary="Predict CLV and churn for a customer",
    route_class_override=PredictionRoute,
)


@router.post(
    "/v1/predictions/batch",
    response_model=BatchPredictionOut,
    response_model_exclude_none=True,
    responses={
        200: {"content": {"application/json": {"example": BATCH_PREDICTION_EXAMPLE}}},
        **problem_responses(
            400,
            401,
            403,
            413,
            415,
            422,
            503,
            examples={
                422: ("malformed-json",),
                503: ("model-unavailable", "database-unavailable"),
            },
        ),
    },
    summary="Predict for many customers at once",
)
async def post_prediction_batch(
    _auth: PredictionsReader,
    _json: JsonBody,
    session: ReaderDep,
    settings: SettingsDep,
    model: ModelDep,
    batch: Annotated[
        BatchPredictionIn,
        Body(
            openapi_examples={
                "two": {
                    "summary": "Two customers",
                    "value": {"customer_ids": ["cust-42", "cust-43"]},
                }
            }
        ),
    ],
) -> Response:
    """Up to `CLV_MAX_BATCH_PREDICTIONS` customers in one feature query and one model run; unknown ids are reported per item."""
    if len(batch.customer_ids) > settings.max_batch_predictions:
        raise InvalidInput(
            f"at most {settings.max_batch_predictions} customer ids per request, got {len(batch.customer_ids)}",
            errors=[
                FieldError(
                    field="customer_ids",
                    pointer="/customer_ids",
                    message=f"at most {settings.max_batch_predictions} items",
                    code="too_long",
                )
            ],
        )
    result = await PredictionService(session, settings, model).many(
        batch.customer_ids, resolve_as_of(batch.as_of, "/as_of", max_skew=settings.max_future_skew)
    )
    return Response(result.model_dump_json(exclude_none=True), media_type="application/json")


@router.get(
    "/v1/model",
    response_model=ModelOut,
    responses=problem_responses(401, 403, 503, examples={503: ("model-unavailable",)}),
    summary="The serving model",
)
async def get_model(_auth: PredictionsReader, model: ModelDep) -> ModelOut:
    """The active model's manifest: version, horizons, features, training metrics and baselines."""
    return ModelOut(
        version=model.version,
        loaded_at=model.loaded_at,
        manifest=model.manifest.model_dump(mode="json"),
    )


@router.post(
    "/v1/admin/model/reload",
    response_model=ModelOut,
    responses=problem_responses(401, 403, 409, 503, examples={409: ("model-refused",)}),
    summary="Reload models/current",
)
async def reload_model(_auth: Admin, registry: RegistryDep) -> ModelOut:
    """Load the artifact `current` points at, validate it and swap it in; a refused artifact leaves the old model serving (409)."""
    model = await registry.reload()
    return ModelOut(
        version=model.version,
        loaded_at=model.loaded_at,
        manifest=model.manifest.model_dump(mode="json"),
    )


@router.get(
    "/v1/segments/{lifecycle_stage}",
    response_model=SegmentPage,
    responses=problem_responses(401, 403, 404, 422, examples={422: ("invalid-cursor",)}),
    summary="Export a segment",
)
async def get_segment(
    _auth: Admin,
    lifecycle_stage: LifecycleStage,
    session: SessionDep,
    value_tier: Annotated[ValueTier | None, Query(description="Only this value tier.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=256, description="`next_cursor` of the previous page.")
    ] = None,
) -> SegmentPage:
    """Customers of one lifecycle stage from the latest stored batch scores (`clv score --store`), highest expected value at risk first: the list a retention campaign needs."""
    scores = ScoreRepository(session)
    run = await scores.latest_run()
    if run is None:
        raise NotFound("no stored batch scores yet: run `clv score --store` (e.g. nightly)")
    after = _decode_segment_cursor(cursor) if cursor else None
    rows = await scores.segment(run.id, lifecycle_stage, value_tier, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        f"{rows[-1].expected_value_at_risk!r}:{rows[-1].customer_pk}" if more and rows else None
    )
    return SegmentPage(
        run=ScoreRunOut(
            id=run.id,
            as_of=run.as_of,
            model_version=run.model_version,
            customers=run.customers,
            created_at=run.created_at,
        ),
        items=[
            SegmentMember(
                customer_id=r.customer_id,
                clv=r.clv,
                churn_probability=r.churn_probability,
                lifecycle_stage=r.lifecycle_stage,
                value_tier=r.value_tier,
                expected_value_at_risk=r.expected_value_at_risk,
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


def _decode_segment_cursor(cursor: str) -> tuple[float, int]:
    try:
        value, pk = cursor.rsplit(":", 1)
        return float(value), int(pk)
    except ValueError as exc:
        raise InvalidInput(
            "cursor is not one this API issued",
            errors=[
                FieldError(
                    field="cursor",
                    pointer="#query/cursor",
                    message="invalid cursor",
                    code="invalid_cursor",
                )
            ],
        ) from exc
