"""The eligibility minimums `clv train` checks before any fitting (issue 11)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.training.dataset import MIN_HISTORY_DAYS, Panel
from app.training.options import NotEligible, TrainOptions

#: Eligibility minimums (issue 11), checked before any fitting; why each is needed:
#: - history: the latest CLV / churn cutoff is as_of - horizon and needs MIN_HISTORY_DAYS of
#:   events before it, else its rows describe nothing but brand-new customers;
#: - customers with an order by the latest CLV cutoff: below a few hundred, the 20 % holdout
#:   and 20 % validation slices hold a few dozen buyers each, too few to rank or calibrate;
#: - buyers in the latest label window, and both churn classes: a target with (almost) one
#:   class or all-zero labels has nothing to learn, and its AUC / Gini is undefined.
MIN_CUSTOMERS_WITH_ORDERS = 200
MIN_BUYERS_IN_WINDOW = 30
MIN_CHURN_CLASS = 30


def check_eligibility(
    panel: Panel,
    options: TrainOptions,
    cutoffs: dict[str, list[dt.datetime]],
    rows: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """Refuse data too small or too short to learn from; else what the model is trained on.

    Raises NotEligible naming every minimum that is not met, with the figures.
    """
    first = dt.datetime.fromisoformat(data["min_occurred_at"]) if data["min_occurred_at"] else None
    horizon = max(options.clv_horizon_days, options.churn_horizon_days)
    history_days = (options.as_of - first).days if first is not None else 0
    latest = cutoffs["clv"][0]
    buyers = panel.buyers_at(latest)
    clv_latest, churn_latest = rows["clv"].latest_labels(), rows["churn"].latest_labels()
    in_window = int((clv_latest > 0).sum())
    churned, stayed = int(churn_latest.sum()), int((churn_latest == 0).sum())
    needed_days = horizon + MIN_HISTORY_DAYS
    problems = []
    if history_days < needed_days:
        problems.append(
            f"history of {history_days} days up to --as-of {options.as_of:%Y-%m-%d}; need at least "
            f"{needed_days} (the longest horizon, {horizon}, + {MIN_HISTORY_DAYS} days before "
            "the latest cutoff)"
        )
    if buyers < MIN_CUSTOMERS_WITH_ORDERS:
        problems.append(
            f"{buyers} customers with an order by the latest CLV cutoff {latest:%Y-%m-%d}; "
            f"need at least {MIN_CUSTOMERS_WITH_ORDERS}"
        )
    if in_window < MIN_BUYERS_IN_WINDOW:
        problems.append(
            f"{in_window} customers bought in the latest {options.clv_horizon_days}-day CLV label "
            f"window; need at least {MIN_BUYERS_IN_WINDOW}"
        )
    if min(churned, stayed) < MIN_CHURN_CLASS:
        problems.append(
            f"churn labels at the latest cutoff: {churned} churned, {stayed} ordered; need at "
            f"least {MIN_CHURN_CLASS} of each"
        )
    if problems:
        raise NotEligible(
            "not enough data to train on: "
            + "; ".join(problems)
            + ". Load more history, pick a later --as-of or shorter horizons "
            "(docs/predictions.md, Eligibility)"
        )
    return {
        "customers": data.get("customers"),
        "events_by_type": data.get("events_by_type"),
        "first_event": data.get("min_occurred_at"),
        "last_event": data.get("max_occurred_at"),
        "as_of": options.as_of.isoformat(),
        "history_days": history_days,
        "customers_with_orders_at_latest_cutoff": buyers,
        "buyers_in_latest_clv_window": in_window,
        "churn_classes_at_latest_cutoff": {"churned": churned, "ordered": stayed},
        "minimums": {
            "history_days": needed_days,
            "customers_with_orders": MIN_CUSTOMERS_WITH_ORDERS,
            "buyers_in_window": MIN_BUYERS_IN_WINDOW,
            "churn_class": MIN_CHURN_CLASS,
        },
    }
