"""Which alerts a change of a customer's stored scores emits (pure functions, no I/O)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from app.alerts.models import AlertType


@dataclass(frozen=True)
class Snapshot:
    """A customer's stored scores at one instant."""

    clv: float
    churn_probability: float
    lifecycle_stage: str
    value_tier: str
    expected_value_at_risk: float
    model_version: str
    as_of: dt.datetime

    def document(self) -> dict[str, Any]:
        """The JSON form used in alert payloads."""
        out = asdict(self)
        out["as_of"] = self.as_of.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return out


def transitions(
    before: Snapshot | None, after: Snapshot, churn_threshold: float
) -> list[tuple[AlertType, dict[str, Any]]]:
    """The alert types (with their specific fields) that going from `before` to `after` emits.

    A customer's first stored scores are a baseline and emit nothing: there is no change yet.
    """
    if before is None:
        return []
    out: list[tuple[AlertType, dict[str, Any]]] = []
    if after.lifecycle_stage != before.lifecycle_stage:
        change = {"from": before.lifecycle_stage, "to": after.lifecycle_stage}
        out.append((AlertType.stage_changed, change))
        if after.lifecycle_stage == "at_risk":
            out.append((AlertType.at_risk, change))
    if after.value_tier != before.value_tier:
        out.append(
            (AlertType.value_tier_changed, {"from": before.value_tier, "to": after.value_tier})
        )
    if before.churn_probability < churn_threshold <= after.churn_probability:
        out.append(
            (
                AlertType.churn_risk_rose,
                {
                    "from": before.churn_probability,
                    "to": after.churn_probability,
                    "threshold": churn_threshold,
                },
            )
        )
    return out
