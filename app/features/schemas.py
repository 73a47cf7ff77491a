"""Feature payloads."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class FeatureValue(BaseModel):
    """One named feature of one customer."""

    name: str = Field(examples=["recency_days"])
    description: str = Field(examples=["Days since the last order"])
    unit: str = Field(examples=["days"])
    value: float


class FeatureVectorOut(BaseModel):
    """A customer's feature vector as of an instant, in model input order."""

    customer_id: str
    as_of: dt.datetime
    fingerprint: str = Field(
        description="Hash of the feature definitions (matches model manifests)."
    )
    features: list[FeatureValue]
