"""From feature vectors to CLV and churn probability with an artifact's ONNX models.

Used by the API (one or a few rows), by `clv score` (large batches) and by training's own
holdout evaluation, so every number the product shows comes out of this one function.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from app.artifacts import CHURN_ONNX, CLV_ONNX, Manifest, read_manifest
from app.features.definitions import FEATURE_NAMES
from app.features.repository import fingerprint
from app.scoring.onnx import INPUT_NAME, onnx_churn, onnx_clv, onnx_session


class ArtifactMismatch(ValueError):
    """The artifact was built for other feature definitions than this code computes."""


@dataclass(frozen=True)
class Predictions:
    """Per-row outputs, aligned with the input rows."""

    clv: np.ndarray  # expected net revenue over the manifest's CLV horizon
    churn_probability: np.ndarray  # P(no order over the churn horizon)
    # Issue 11; None when the artifact predates them (then the API shows null).
    clv_p10: np.ndarray | None = None
    clv_p50: np.ndarray | None = None
    clv_p90: np.ndarray | None = None
    expected_orders: np.ndarray | None = None  # orders over the CLV horizon
    order_probability: np.ndarray | None = None  # P(an order within manifest.propensity_days)


def check_compatible(manifest: Manifest, currency: str | None = None) -> None:
    """Raise ArtifactMismatch unless the manifest's features are exactly this code's features
    and, when `currency` is given, the model was trained on amounts in that currency."""
    if currency is not None and manifest.currency.upper() != currency.upper():
        # A USD model's numbers labelled EUR would be wrong by the exchange rate, silently.
        raise ArtifactMismatch(
            f"model {manifest.version} was trained on amounts in {manifest.currency}, this "
            f"service runs in {currency} (CLV_CURRENCY); train on this shop's history with "
            "`clv train`"
        )
    if manifest.feature_names != list(FEATURE_NAMES):
        missing = sorted(set(FEATURE_NAMES) - set(manifest.feature_names))
        extra = sorted(set(manifest.feature_names) - set(FEATURE_NAMES))
        raise ArtifactMismatch(
            f"model {manifest.version} expects other features (code lacks {extra or 'none'}, "
            f"model lacks {missing or 'none'}, or the order differs); retrain with `clv train`"
        )
    if manifest.feature_fingerprint != fingerprint():
        raise ArtifactMismatch(
            f"model {manifest.version} was trained on feature definitions {manifest.feature_fingerprint}, "
            f"this code computes {fingerprint()}; retrain with `clv train`"
        )


def calibrate(probability: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt scaling on the logit: sigmoid(a * logit(p) + b)."""
    p = np.clip(probability, 1e-7, 1 - 1e-7)
    return np.asarray(1.0 / (1.0 + np.exp(-(a * np.log(p / (1 - p)) + b))), dtype=np.float64)


def clv_interval(
    clv: np.ndarray, intervals: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(p10, p50, p90) of CLV: the prediction times the out-of-time ratio quantiles of its bin.

    The ratio quantiles (actual / predicted, calibrated on the out-of-time fold) are
    interpolated linearly between bin centres in predicted CLV and held flat beyond the end
    bins. Per centre p10 <= p50 <= p90, interpolation keeps the order and the prediction is
    >= 0, so the quantiles never cross. None when the manifest has no intervals.
    """
    table = interval_table(intervals)
    if table is None:
        return None
    x, p10, p50, p90 = table
    return clv * np.interp(clv, x, p10), clv * np.interp(clv, x, p50), clv * np.interp(clv, x, p90)


def interval_table(
    intervals: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(centres, p10, p50, p90 ratios) as arrays, None when the manifest has no intervals."""
    if not intervals.get("centers"):
        return None
    return (
        np.asarray(intervals["centers"], dtype=np.float64),
        np.asarray(intervals["p10"], dtype=np.float64),
        np.asarray(intervals["p50"], dtype=np.float64),
        np.asarray(intervals["p90"], dtype=np.float64),
    )


#: From this many rows on, the CLV and churn models run in parallel threads.
PARALLEL_ROWS = 256


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")


class Predictor:
    """An artifact's ONNX sessions plus the post-processing its manifest prescribes."""

    def __init__(self, directory: Path, threads: int = 1, currency: str | None = None) -> None:
        self.directory = directory
        self.manifest = read_manifest(directory)
        check_compatible(self.manifest, currency)
        self.clv_session = onnx_session(directory / CLV_ONNX, threads)
        self.churn_session = onnx_session(directory / CHURN_ONNX, threads)
        self.clv_scale = float(self.manifest.training.get("clv_scale", 1.0))
        self.interval_table = interval_table(self.manifest.clv_intervals)
        files = self.manifest.files
        # Optional models (issue 11): an older artifact without them still serves, with nulls.
        self.orders_session = (
            onnx_session(directory / files["orders_onnx"], threads)
            if "orders_onnx" in files
            else None
        )
        self.propensity_session = (
            onnx_session(directory / files["propensity_onnx"], threads)
            if "propensity_onnx" in files
            else None
        )
        # The four graphs in one (issue 11): one onnxruntime call for a single customer.
        self.combined_session = (
            onnx_session(directory / files["combined_onnx"], threads)
            if "combined_onnx" in files
            else None
        )

    def predict(self, features: np.ndarray) -> Predictions:
        """CLV and churn probability for each row of `features` (n x len(FEATURE_NAMES))."""
        if self.combined_session is not None and len(features) < PARALLEL_ROWS:
            return self._finish(*self._combined(features))
        if len(features) >= PARALLEL_ROWS:
            # The regressors and the classifiers run side by side (onnxruntime releases the
            # GIL). Each session still sums its trees on one thread, so every row's result is
            # the same as alone.
            regressors = _pool().submit(self._regressors, features)
            churn, propensity = self._classifiers(features)
            raw_clv, orders = regressors.result()
        else:
            raw_clv, orders = self._regressors(features)
            churn, propensity = self._classifiers(features)
        return self._finish(raw_clv, churn, orders, propensity)

    def _regressors(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw CLV and expected orders (None without an orders model)."""
        orders = (
            onnx_clv(self.orders_session, features) if self.orders_session is not None else None
        )
        return onnx_clv(self.clv_session, features), orders

    def _classifiers(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw churn and order probabilities (None without a propensity model)."""
        propensity = (
            onnx_churn(self.propensity_session, features)
            if self.propensity_session is not None
            else None
        )
        return onnx_churn(self.churn_session, features), propensity

    def _combined(
        self, features: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw CLV, churn, orders and propensity from the combined graph (one call)."""
        assert self.combined_session is not None
        clv, churn, orders, propensity = self.combined_session.run(
            None, {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)}
        )
        return (
            np.asarray(clv, dtype=np.float64).ravel(),
            np.asarray(churn, dtype=np.float64)[:, 1],
            np.asarray(orders, dtype=np.float64).ravel(),
            np.asarray(propensity, dtype=np.float64)[:, 1],
        )

    def _finish(
        self,
        raw_clv: np.ndarray,
        churn: np.ndarray,
        raw_orders: np.ndarray | None,
        propensity: np.ndarray | None,
    ) -> Predictions:
        """The manifest's post-processing: CLV scale, churn calibration, interval, floors."""
        clv = np.maximum(raw_clv * self.clv_scale, 0.0)
        calibration = self.manifest.churn_calibration
        if calibration.method == "platt":
            churn = calibrate(churn, calibration.a, calibration.b)
        interval = None
        if self.interval_table is not None:
            x, p10, p50, p90 = self.interval_table
            interval = (
                clv * np.interp(clv, x, p10),
                clv * np.interp(clv, x, p50),
                clv * np.interp(clv, x, p90),
            )
        orders = np.maximum(raw_orders, 0.0) if raw_orders is not None else None
        return Predictions(
            clv=clv,
            churn_probability=churn,
            clv_p10=interval[0] if interval else None,
            clv_p50=interval[1] if interval else None,
            clv_p90=interval[2] if interval else None,
            expected_orders=orders,
            order_probability=propensity,
        )
