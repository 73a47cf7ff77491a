"""The model a worker serves: loaded from `models/current`, validated, warmed up, hot-swapped.

A request takes `registry.active` once and uses that object to the end, so a swap never mixes two
models inside one response; the swap itself is a single reference assignment. A broken or
mismatched artifact is refused and the previous model keeps serving.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.artifacts import CHURN_NATIVE, CLV_NATIVE, Manifest, current_directory, current_version
from app.errors import AppError
from app.features.definitions import FEATURE_NAMES
from app.scoring.evidence import TrainingRanges
from app.scoring.explain import (
    Explanation,
    ExplanationUnavailable,
    LinearExplainer,
    explain,
    load_booster,
)
from app.scoring.predictor import Predictor

if TYPE_CHECKING:
    import xgboost as xgb

logger = logging.getLogger(__name__)


class ModelUnavailable(AppError):
    status, slug, title = 503, "model-unavailable", "No model loaded"


@dataclass(frozen=True)
class LoadedModel:
    """Everything needed to score and explain with one artifact."""

    directory: Path
    predictor: Predictor
    loaded_at: dt.datetime
    ranges: TrainingRanges

    # The native boosters serve only explanations: loaded on the first one, so a worker starts
    # without importing xgboost (which imports scikit-learn and pandas when installed).
    @cached_property
    def clv_booster(self) -> xgb.Booster:
        return load_booster(self.directory / CLV_NATIVE)

    @cached_property
    def churn_booster(self) -> xgb.Booster:
        return load_booster(self.directory / CHURN_NATIVE)

    @cached_property
    def linear_explainers(self) -> dict[str, LinearExplainer]:
        """Explainers of the targets a linear challenger serves (docs/challengers.md)."""
        files = self.manifest.files
        return {
            target: LinearExplainer.load(self.directory / files[f"{target}_explain"])
            for target in ("clv", "churn")
            if f"{target}_explain" in files
        }

    def check_explainable(self) -> None:
        """Raise ExplanationUnavailable when a served target has no exact explanation."""
        families = self.manifest.training.get("families", {})
        files = self.manifest.files
        unexplained = {
            target: family
            for target, family in families.items()
            if family != "xgboost" and f"{target}_explain" not in files
        }
        if unexplained:
            raise ExplanationUnavailable(unexplained)

    def explain(self, target: str, rows: np.ndarray) -> list[Explanation]:
        """Exact explanations of the model serving `target` ("clv" or "churn")."""
        self.check_explainable()
        linear = self.linear_explainers.get(target)
        if linear is not None:
            return linear.explain(rows)
        return explain(self.clv_booster if target == "clv" else self.churn_booster, rows)

    @property
    def manifest(self) -> Manifest:
        return self.predictor.manifest

    @property
    def version(self) -> str:
        return self.predictor.manifest.version


def load_model(directory: Path, threads: int = 1, currency: str | None = None) -> LoadedModel:
    """Load and validate an artifact (for `currency` when given), then warm it up."""
    predictor = Predictor(directory, threads=threads, currency=currency)
    for native in (CLV_NATIVE, CHURN_NATIVE):
        if not (directory / native).is_file():  # explanations need it: refuse now, not later
            raise FileNotFoundError(f"{directory / native} is missing")
    warm = np.zeros((1, len(FEATURE_NAMES)))
    for _ in range(3):
        predictor.predict(warm)
    predictor.predict(np.zeros((64, len(FEATURE_NAMES))))
    return LoadedModel(
        directory,
        predictor,
        dt.datetime.now(dt.UTC),
        TrainingRanges(predictor.manifest.feature_ranges),
    )


class ModelRegistry:
    """The active model of this worker, with the reason when there is none."""

    def __init__(self, model_dir: Path, threads: int = 1, currency: str | None = None) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self.currency = currency
        self._active: LoadedModel | None = None
        self.error: str | None = "not loaded yet"
        self._lock = asyncio.Lock()
        self._seen_pointer: str | None = None

    @property
    def active(self) -> LoadedModel:
        """The serving model, or ModelUnavailable (503) saying why there is none."""
        model = self._active
        if model is None:
            raise ModelUnavailable(
                f"no model is loaded: {self.error}", headers={"Retry-After": "10"}
            )
        return model

    @property
    def ready(self) -> bool:
        return self._active is not None

    def _load_current(self) -> LoadedModel:
        directory = current_directory(self.model_dir)
        if directory is None:
            raise ValueError(
                f"{self.model_dir}/current does not exist: train a model (`clv train`)"
            )
        return load_model(directory, self.threads, self.currency)

    def load_initial(self) -> None:
        """Load at startup; a failure leaves the worker up but not ready, with the reason."""
        self._seen_pointer = current_version(self.model_dir)
        try:
            self._active = self._load_current()
            self.error = None
            logger.info("serving model %s", self._active.version)
        except Exception as exc:  # any broken artifact must not crash the worker
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("no model loaded: %s", self.error)

    async def reload(self) -> LoadedModel:
        """Load `current` again and swap it in; on failure keep serving the old model and raise."""
        async with self._lock:
            self._seen_pointer = current_version(self.model_dir)
            try:
                model = await asyncio.to_thread(self._load_current)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if self._active is None:
                    self.error = reason
                logger.error("model reload refused: %s", reason)
                raise ModelReloadFailed(
                    f"the artifact was refused ({reason}); "
                    + (
                        f"still serving {self._active.version}"
                        if self._active
                        else "no model is loaded"
                    )
                ) from exc
            previous = self._active
            self._active = model
            self.error = None
            logger.info(
                "model swapped: %s -> %s", previous.version if previous else None, model.version
            )
            return model

    async def reload_if_pointer_changed(self) -> None:
        """Reload when `current` names another version than last seen (multi-worker sync)."""
        if current_version(self.model_dir) == self._seen_pointer:
            return
        try:
            await self.reload()
        except ModelReloadFailed:
            pass  # logged; the old model serves and the pointer is not retried until it changes

    async def watch(self, interval: float) -> None:
        """Poll the pointer forever (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(interval)
            await self.reload_if_pointer_changed()


class ModelReloadFailed(AppError):
    status, slug, title = 409, "model-refused", "Model artifact refused"
