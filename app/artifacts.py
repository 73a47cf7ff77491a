"""Model artifacts on disk: `<model_dir>/<version>/` directories, their manifest, the `current` pointer.

Training writes them; scoring reads them. A version directory is immutable once written; which one
serves is decided by the `current` pointer file, replaced atomically (write + os.replace).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

MANIFEST = "manifest.json"
POINTER = "current"
CLV_ONNX = "clv.onnx"
CHURN_ONNX = "churn.onnx"
CLV_NATIVE = "clv.xgb.json"
CHURN_NATIVE = "churn.xgb.json"
ORDERS_ONNX = "orders.onnx"
PROPENSITY_ONNX = "propensity.onnx"
ORDERS_NATIVE = "orders.xgb.json"
PROPENSITY_NATIVE = "propensity.xgb.json"
#: The four served graphs side by side in one file: one onnxruntime call per single prediction.
COMBINED_ONNX = "all.onnx"
REPORT = "report.html"
FORMAT_VERSION = 1


class Calibration(BaseModel):
    """Post-hoc churn calibration: p' = sigmoid(a * logit(p) + b), or none."""

    method: str = Field(description="`none` or `platt`.")
    a: float = 1.0
    b: float = 0.0


class Parity(BaseModel):
    """ONNX vs native XGBoost on the holdout rows."""

    rows: int
    clv_max_abs_diff: float
    clv_max_rel_diff: float
    churn_max_abs_diff: float
    tolerance: dict[str, float]
    passed: bool
    # Added for issue 11: the orders and propensity models (absent in older manifests).
    extra: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="model -> max_abs_diff / max_rel_diff (issue 11)."
    )


class Manifest(BaseModel):
    """Everything a server needs to trust and use an artifact, and what a person needs to judge it."""

    format_version: int = FORMAT_VERSION
    version: str
    created_at: dt.datetime
    code_version: str
    as_of: dt.datetime
    clv_horizon_days: int
    churn_horizon_days: int
    currency: str
    feature_names: list[str]
    feature_fingerprint: str
    cutoffs: dict[str, list[dt.datetime]]
    split: dict[str, Any]
    rows: dict[str, int]
    training: dict[str, Any]
    churn_calibration: Calibration
    metrics: dict[str, dict[str, float]] = Field(description="model/baseline -> metric -> value")
    clv_quantiles: dict[str, float] = Field(
        description="Predicted CLV percentiles p1..p99 as of as_of."
    )
    churn_quantiles: dict[str, float]
    parity: Parity
    promotion: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str]
    # Added for issue 10/17; optional so older manifests still load.
    feature_ranges: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Feature -> [min, max] over the rows the final models were fitted on.",
    )
    metrics_out_of_time: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="model/baseline -> metric -> value of the out-of-time fold (docs/accuracy.md).",
    )
    validation: dict[str, Any] = Field(
        default_factory=dict, description="How out-of-time validation was done (gap, cutoffs...)."
    )
    baseline_failures: dict[str, str] = Field(
        default_factory=dict, description="Baseline -> why it could not be evaluated."
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Fingerprint of the data trained on (counts, latest instants).",
    )
    seeds: dict[str, int] = Field(default_factory=dict, description="Every seed the run used.")
    reproduce: dict[str, Any] = Field(
        default_factory=dict,
        description="Options, data fingerprint, code and library versions to retrain this model.",
    )
    # Added for issue 11; optional so older manifests still load (their fields are then null).
    clv_intervals: dict[str, Any] = Field(
        default_factory=dict,
        description="CLV p10/p50/p90: ratio quantiles by bin of predicted CLV, calibrated out of "
        "time (docs/predictions.md).",
    )
    propensity_days: int | None = Field(
        default=None, description="Days of the order-probability window (None: no such model)."
    )
    eligibility: dict[str, Any] = Field(
        default_factory=dict,
        description="What the model was trained on (customers, orders, date range) and the "
        "minimums it passed.",
    )


def read_manifest(directory: Path) -> Manifest:
    """The manifest of an artifact directory (ValueError when missing or malformed)."""
    path = directory / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"{path} does not exist") from exc


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write the manifest (pretty JSON) into an artifact directory."""
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")


def current_version(model_dir: Path) -> str | None:
    """The version the `current` pointer names, None without a pointer."""
    pointer = model_dir / POINTER
    if pointer.is_symlink():
        return os.readlink(pointer).rstrip("/").split("/")[-1]
    if not pointer.exists():
        return None
    return pointer.read_text().strip() or None


def current_directory(model_dir: Path) -> Path | None:
    """The artifact directory `current` points at, None without a pointer."""
    version = current_version(model_dir)
    return None if version is None else model_dir / version


def promote(model_dir: Path, version: str) -> None:
    """Point `current` at `version`, atomically: a reader sees the old or the new name, never half."""
    if not (model_dir / version / MANIFEST).exists():
        raise ValueError(f"{model_dir / version} is not an artifact directory")
    pointer = model_dir / POINTER
    temporary = model_dir / f".{POINTER}.{os.getpid()}"
    temporary.write_text(version + "\n")
    os.replace(temporary, pointer)


def quantile_levels() -> list[int]:
    """The percentiles stored for predicted CLV and churn: every whole percentile, p1..p99."""
    return list(range(1, 100))
