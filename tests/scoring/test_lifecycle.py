"""Lifecycle stages and value tiers at their boundaries, and settings that move them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.features.definitions import FEATURE_INDEX, FEATURE_NAMES, parse_as_of
from app.scoring.lifecycle import lifecycle_stages, value_tiers
from tests.conftest import app_client
from tests.scoring.support import AS_OF, offline_matrix

HORIZON = 90  # churn horizon (days), from the manifest in production
NEW_DAYS = 30
THRESHOLD = 0.5


def above(x: float) -> float:
    """The next float after x: "just above" with no room for a rule to hide in."""
    return float(np.nextafter(x, np.inf))


def stage(
    *,
    orders: float = 3,
    recency: float = 10,
    order_age: float = 200,
    probability: float = 0.1,
    horizon: int = HORIZON,
    new_days: int = NEW_DAYS,
    threshold: float = THRESHOLD,
) -> str:
    features = np.zeros((1, len(FEATURE_NAMES)))
    features[0, FEATURE_INDEX["orders"]] = orders
    features[0, FEATURE_INDEX["recency_days"]] = recency
    features[0, FEATURE_INDEX["order_age_days"]] = order_age
    [result] = lifecycle_stages(
        features,
        np.array([probability]),
        churn_horizon_days=horizon,
        new_customer_days=new_days,
        at_risk_threshold=threshold,
    )
    return result


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # prospect: no order at all, whatever else is true
        ({"orders": 0, "recency": 5, "order_age": 0}, "prospect"),
        ({"orders": 0, "recency": 1000, "order_age": 0, "probability": 0.99}, "prospect"),
        # lapsed: recency strictly above the churn horizon
        ({"recency": above(HORIZON), "order_age": 400}, "lapsed"),
        ({"recency": HORIZON, "order_age": 400}, "active"),
        ({"recency": HORIZON, "order_age": 400, "probability": 0.9}, "at_risk"),
        ({"recency": 400, "order_age": 400, "probability": 0.0}, "lapsed"),
        # new: first order at most new_customer_days ago
        ({"orders": 1, "recency": NEW_DAYS, "order_age": NEW_DAYS}, "new"),
        ({"orders": 1, "recency": NEW_DAYS, "order_age": above(NEW_DAYS)}, "active"),
        ({"orders": 1, "recency": 0, "order_age": 0}, "new"),
        # at_risk: probability strictly above the threshold
        ({"probability": above(THRESHOLD)}, "at_risk"),
        ({"probability": THRESHOLD}, "active"),
        ({"probability": 0.0}, "active"),
        ({"probability": 1.0}, "at_risk"),
    ],
)
def test_stage_boundaries(row: dict[str, Any], expected: str) -> None:
    assert stage(**row) == expected


def test_precedence_is_prospect_lapsed_new_at_risk_active() -> None:
    # Each rule wins over every later one when both match.
    assert stage(orders=0, recency=500, order_age=0, probability=0.9) == "prospect"
    # lapsed before new (a long new-customer window makes both true)
    assert stage(recency=100, order_age=100, probability=0.9, new_days=365) == "lapsed"
    # new before at_risk
    assert stage(orders=1, recency=3, order_age=3, probability=0.99) == "new"
    assert stage(recency=3, order_age=40, probability=0.99) == "at_risk"


def test_thresholds_come_from_the_arguments() -> None:
    assert stage(recency=50, order_age=400, horizon=49) == "lapsed"
    assert stage(recency=50, order_age=400, horizon=50) == "active"
    assert stage(order_age=60, new_days=60) == "new"
    assert stage(order_age=60, new_days=59) == "active"
    assert stage(probability=0.3, threshold=0.29) == "at_risk"
    assert stage(probability=0.3, threshold=0.3) == "active"


def test_stages_of_many_rows_keep_their_order() -> None:
    features = np.zeros((5, len(FEATURE_NAMES)))
    features[:, FEATURE_INDEX["orders"]] = [0, 2, 1, 4, 5]
    features[:, FEATURE_INDEX["recency_days"]] = [9, 120, 2, 20, 20]
    features[:, FEATURE_INDEX["order_age_days"]] = [0, 300, 2, 300, 300]
    probability = np.array([0.9, 0.1, 0.9, 0.8, 0.2])
    assert lifecycle_stages(
        features,
        probability,
        churn_horizon_days=HORIZON,
        new_customer_days=NEW_DAYS,
        at_risk_threshold=THRESHOLD,
    ) == ["prospect", "lapsed", "new", "at_risk", "active"]


QUANTILES = {f"p{q}": float(q) for q in range(1, 100)}  # p90 = 90.0 etc.


@pytest.mark.parametrize(
    ("clv", "expected"),
    [
        (1000.0, "top"),
        (90.0, "top"),
        (float(np.nextafter(90.0, 0)), "high"),
        (70.0, "high"),
        (float(np.nextafter(70.0, 0)), "medium"),
        (40.0, "medium"),
        (float(np.nextafter(40.0, 0)), "low"),
        (0.0, "low"),
    ],
)
def test_tiers_start_exactly_at_the_percentiles(clv: float, expected: str) -> None:
    assert value_tiers(np.array([clv]), QUANTILES, (90, 70, 40)) == [expected]


def test_tiers_follow_the_configured_percentiles() -> None:
    clv = np.array([80.0, 79.0, 50.0, 49.0, 20.0, 19.0])
    assert value_tiers(clv, QUANTILES, (80, 50, 20)) == [
        "top",
        "high",
        "high",
        "medium",
        "medium",
        "low",
    ]
    settings = Settings(value_tier_percentiles="95,60,10")
    assert settings.tier_percentiles == (95, 60, 10)
    with pytest.raises(ValueError, match="descending"):
        Settings(value_tier_percentiles="40,70,90")


async def test_at_risk_threshold_setting_changes_the_stage(demo_settings: Settings) -> None:
    ids = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids

    async def stages(settings: Settings) -> dict[str, tuple[str, float]]:
        async with app_client(settings) as client:
            response = await client.post(
                "/v1/predictions/batch", json={"customer_ids": ids, "as_of": AS_OF}
            )
        assert response.status_code == 200
        return {
            r["customer_id"]: (
                r["prediction"]["segment"]["lifecycle_stage"],
                r["prediction"]["churn"]["probability"],
            )
            for r in response.json()["results"]
        }

    default = await stages(demo_settings)
    active = [(c, p) for c, (s, p) in default.items() if s == "active"]
    at_risk = [(c, p) for c, (s, p) in default.items() if s == "at_risk"]
    assert active
    assert at_risk
    # Lower the threshold just under the least risky active customer: every active one is at risk.
    lowest = min(p for _, p in active)
    assert lowest <= THRESHOLD
    lowered = await stages(demo_settings.model_copy(update={"at_risk_threshold": lowest - 1e-5}))
    assert all(lowered[c][0] == "at_risk" for c, _ in active)
    # Raise it above every probability: nobody is at risk any more, they are active.
    raised = await stages(demo_settings.model_copy(update={"at_risk_threshold": 0.999999}))
    assert all(raised[c][0] == "active" for c, _ in at_risk if raised[c][1] < 0.999999)
    assert all(s != "at_risk" for s, p in raised.values() if p < 0.999999)
    # Other stages do not depend on the threshold.
    for c, (s, _) in default.items():
        if s in ("prospect", "lapsed", "new"):
            assert lowered[c][0] == raised[c][0] == s
