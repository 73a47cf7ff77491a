"""What `clv backtest` is asked to do: the options, the origins, the methods compared, and
the check that every origin's label window lies inside the stored order log.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from sqlalchemy import Engine

from app.training.backtest_repository import order_log_extent

#: The methods in the order tables show them; the model is compared with each of the others.
METHODS = ("model", "bg_nbd_gamma_gamma", "spend_rate", "recency", "linear", "mlp")
#: Challengers (app.training.challengers), trained inside `clv train --challengers` at the origin.
CHALLENGER_METHODS = ("linear", "mlp")
TITLES = {
    "model": "XGBoost (clv train)",
    "linear": "Ridge + logistic",
    "mlp": "MLP (scikit-learn)",
    "bg_nbd_gamma_gamma": "BG/NBD + Gamma-Gamma",
    "spend_rate": "Spend-rate heuristic",
    "recency": "Recency heuristic",
}


class BacktestError(ValueError):
    """The backtest cannot run as asked (no data, windows past the end of the log...)."""


@dataclass(frozen=True)
class BacktestOptions:
    """What `clv backtest` was asked to do."""

    last_origin: dt.datetime
    origins: int = 4
    step_days: int = 30
    clv_horizon_days: int = 365
    churn_horizon_days: int = 90
    seed: int = 0
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    currency: str = "USD"
    bg_nbd: bool = True
    propensity_days: int = 30  # issue 11: window of the order-probability metric
    challengers: bool = False
    allow_partial_window: bool = False
    progress: bool = False

    def origin_list(self) -> list[dt.datetime]:
        """The origins, oldest first, `step_days` apart, ending at `last_origin`."""
        return [
            self.last_origin - dt.timedelta(days=k * self.step_days)
            for k in reversed(range(self.origins))
        ]


def check_windows(engine: Engine, options: BacktestOptions) -> None:
    """Refuse origins whose label windows reach past the last stored order (unless allowed)."""
    extent = order_log_extent(engine)
    if extent.last is None or extent.first is None:
        raise BacktestError("no orders or refunds stored: import a transaction log first")
    origins = options.origin_list()
    if origins[0] <= extent.first:
        raise BacktestError(
            f"the first origin {origins[0]:%Y-%m-%d} is not after the first order ({extent.first:%Y-%m-%d})"
        )
    horizon = max(options.clv_horizon_days, options.churn_horizon_days)
    window_end = origins[-1] + dt.timedelta(days=horizon)
    # By calendar day: a log that ends at noon on its last day still covers a window ending that day.
    if window_end.date() > extent.last.date() and not options.allow_partial_window:
        latest = extent.last - dt.timedelta(days=horizon)
        raise BacktestError(
            f"the last origin's {horizon}-day window ends {window_end:%Y-%m-%d}, after the last stored "
            f"order ({extent.last:%Y-%m-%d}): its labels would be incomplete. Use --last-origin "
            f"{latest:%Y-%m-%d} or earlier (or --allow-partial-window)"
        )
