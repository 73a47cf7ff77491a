"""HTTP endpoint exposing a customer's feature vector."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.dependencies import PredictionsReader
from app.db import ReaderDep
from app.errors import FieldError, InvalidInput, NotFound, problem_responses
from app.events.schemas import EARLIEST_OCCURRED_AT
from app.features.definitions import FEATURES, fingerprint, parse_as_of
from app.features.repository import FeatureRepository
from app.features.schemas import FeatureValue, FeatureVectorOut
from app.ids import CustomerIdPath

router = APIRouter(prefix="/v1/customers", tags=["features"])

AsOfQuery = Annotated[
    str | None,
    Query(
        description="RFC 3339 instant with offset, or YYYY-MM-DD (end of that UTC day). "
        "Default: now. Only events with occurred_at <= as_of count.",
        examples=["2026-11-01T00:00:00Z"],
        max_length=64,
    ),
]


def resolve_as_of(value: str | None, pointer: str = "#query/as_of") -> dt.datetime:
    """An `as_of` parameter as an aware UTC instant (now when absent), or 422 naming it."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        moment = parse_as_of(value)
        # Nothing happened before the earliest event; the feature windows reach a year back,
        # which would overflow datetime near year 1 (a 500).
        if moment < EARLIEST_OCCURRED_AT:
            raise ValueError(f"as_of must not be before {EARLIEST_OCCURRED_AT.isoformat()}")
    except (ValueError, OverflowError) as exc:  # OverflowError: offsets at year 1 or 9999
        raise InvalidInput(
            "invalid field(s): as_of",
            errors=[
                FieldError(field="as_of", pointer=pointer, message=str(exc), code="invalid_as_of")
            ],
        ) from exc
    return moment


@router.get(
    "/{customer_id}/features",
    response_model=FeatureVectorOut,
    responses=problem_responses(401, 403, 404, 422),
    summary="Read a customer's feature vector",
)
async def get_features(
    _auth: PredictionsReader,
    customer_id: CustomerIdPath,
    session: ReaderDep,
    as_of: AsOfQuery = None,
) -> FeatureVectorOut:
    """The model inputs for this customer as of `as_of`, with names and plain-words descriptions."""
    moment = resolve_as_of(as_of)
    matrix = await FeatureRepository(session).for_customers([customer_id], moment)
    if not len(matrix):
        raise NotFound(f"no customer with id {customer_id!r}")
    values = matrix.values[0].tolist()
    return FeatureVectorOut(
        customer_id=customer_id,
        as_of=moment,
        fingerprint=fingerprint(),
        features=[
            FeatureValue(name=f.name, description=f.description, unit=f.unit, value=v)
            for f, v in zip(FEATURES, values, strict=True)
        ],
    )
