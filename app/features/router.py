"""HTTP endpoint exposing a customer's feature vector."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.dependencies import PredictionsReader
from app.config import SettingsDep
from app.db import ReaderDep
from app.errors import NotFound, problem_responses
from app.features.as_of import AsOfQuery, resolve_as_of
from app.features.definitions import FEATURES
from app.features.repository import FeatureRepository, fingerprint
from app.features.schemas import FeatureValue, FeatureVectorOut
from app.ids import CustomerIdPath

router = APIRouter(prefix="/v1/customers", tags=["features"])


@router.get(
    "/{customer_id}/features",
    response_model=FeatureVectorOut,
    responses=problem_responses(
        401, 403, 404, 422, examples={422: ("invalid-customer-id", "invalid-as-of")}
    ),
    summary="Read a customer's feature vector",
)
async def get_features(
    _auth: PredictionsReader,
    customer_id: CustomerIdPath,
    session: ReaderDep,
    settings: SettingsDep,
    as_of: AsOfQuery = None,
) -> FeatureVectorOut:
    """The model inputs for this customer as of `as_of`, with names and plain-words descriptions."""
    moment = resolve_as_of(as_of, max_skew=settings.max_future_skew)
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
