"""`clv reproduce`: retrain an artifact from its manifest and check that the result is the same model.

The manifest's `reproduce` block (written by `clv train`) holds the options, seeds, data fingerprint
and library versions. The retrained artifact goes to a throwaway directory; the check is on the
bytes of clv.onnx / churn.onnx, and, to say how far apart two differing models are, on the
predictions both make for every customer as of the training instant.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.artifacts import CHURN_ONNX, CLV_ONNX, MANIFEST
from app.features.repository import offline_features
from app.scoring.predictor import ArtifactMismatch, Predictor
from app.training.options import TrainOptions
from app.training.train import train

#: TrainOptions fields that do not change the model: never taken from the manifest.
_NOT_MODEL_OPTIONS = {"model_dir", "progress", "force", "promote", "baselines"}


class ReproduceError(ValueError):
    """The directory is not an artifact, or its manifest does not say how it was trained."""


@dataclass(frozen=True)
class FileCheck:
    """One artifact file: the original's and the retrained copy's sha256."""

    name: str
    expected: str
    actual: str

    @property
    def identical(self) -> bool:
        """Byte for byte the same file."""
        return self.expected == self.actual


@dataclass
class Reproduction:
    """What retraining from the manifest gave, compared with the original artifact."""

    directory: Path
    options: dict[str, Any]
    files: list[FileCheck]
    data_same: bool | None  # None: the manifest records no data fingerprint to compare
    data_differences: list[str] = field(default_factory=list)
    ignored_options: list[str] = field(default_factory=list)
    rows_compared: int = 0
    max_clv_diff: float | None = None
    max_churn_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Every model file is byte-identical."""
        return all(f.identical for f in self.files)

    def matches(self, tolerance: float | None = None) -> bool:
        """Identical bytes, or (with a tolerance) predictions within it for every customer."""
        if self.identical:
            return True
        if tolerance is None or self.max_clv_diff is None or self.max_churn_diff is None:
            return False
        return self.max_clv_diff <= tolerance and self.max_churn_diff <= tolerance


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_raw_manifest(directory: Path) -> dict[str, Any]:
    """The manifest as plain JSON (older manifests lack the `reproduce` block)."""
    path = directory / MANIFEST
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ReproduceError(f"{path} does not exist: not an artifact directory") from exc
    except json.JSONDecodeError as exc:
        raise ReproduceError(f"{path} is not valid JSON: {exc}") from exc
    return raw


def recorded_options(raw: dict[str, Any]) -> dict[str, Any]:
    """The training options the manifest records (its `reproduce` block, else what older
    manifests imply: instant, horizons, split, seed and the stacked cutoffs)."""
    block = raw.get("reproduce") or {}
    if block.get("options"):
        return dict(block["options"])
    try:
        cutoffs = [dt.datetime.fromisoformat(c) for c in raw["cutoffs"]["clv"]]
        split = raw["split"]
        options: dict[str, Any] = {
            "as_of": raw["as_of"],
            "clv_horizon_days": raw["clv_horizon_days"],
            "churn_horizon_days": raw["churn_horizon_days"],
            "currency": raw["currency"],
            "split": split["method"],
            "validation_fraction": split["validation_fraction"],
            "seed": split["seed"],
            "stack": len(cutoffs),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ReproduceError(
            f"the manifest does not record how the model was trained: {exc}"
        ) from exc
    if split["method"] == "hash":
        options["holdout_fraction"] = split["holdout_fraction"]
    if len(cutoffs) > 1:
        options["stack_step_days"] = (cutoffs[0] - cutoffs[1]).days
    return options


def train_options(recorded: dict[str, Any], model_dir: Path) -> tuple[TrainOptions, list[str]]:
    """TrainOptions from recorded options (unknown ones are returned, not silently dropped)."""
    known = {f.name for f in dataclasses.fields(TrainOptions)} - _NOT_MODEL_OPTIONS
    values = {k: v for k, v in recorded.items() if k in known}
    ignored = sorted(k for k in recorded if k not in known and k not in _NOT_MODEL_OPTIONS)
    values["as_of"] = dt.datetime.fromisoformat(str(values["as_of"]))
    base: dict[str, Any] = {"model_dir": model_dir, "progress": False, "baselines": False}
    if "promote" in {f.name for f in dataclasses.fields(TrainOptions)}:
        base["promote"] = False
    return TrainOptions(**{**values, **base}), ignored


def _compare_data(
    original: dict[str, Any], retrained: dict[str, Any]
) -> tuple[bool | None, list[str]]:
    """Same data? The content hash decides when both have one; else counts and last instants.

    `max_received_at` is reported but never decides: loading the same events again (another
    database, the API instead of a file) gives new receipt times and the same model.
    """
    if not original:
        return None, ["the manifest records no data fingerprint"]
    differences = [
        f"{key}: trained on {original.get(key)!r}, now {retrained.get(key)!r}"
        for key in sorted(set(original) | set(retrained))
        if key != "max_received_at" and original.get(key) != retrained.get(key)
    ]
    if original.get("content_sha256") and retrained.get("content_sha256"):
        return original["content_sha256"] == retrained["content_sha256"], differences
    return not differences, differences


def reproduce(
    engine: Engine,
    directory: Path,
    threads: int | None = None,
    work_dir: Path | None = None,
) -> Reproduction:
    """Retrain `directory`'s model on `engine` with its recorded options; compare the results."""
    raw = read_raw_manifest(directory)
    recorded = recorded_options(raw)
    if threads is not None:
        recorded["threads"] = threads
    with tempfile.TemporaryDirectory(prefix="clv-reproduce-", dir=work_dir) as tmp:
        options, ignored = train_options(recorded, Path(tmp))
        result = train(engine, options)
        files = [
            FileCheck(name, _sha256(directory / name), _sha256(result.directory / name))
            for name in (CLV_ONNX, CHURN_ONNX)
        ]
        retrained_raw = read_raw_manifest(result.directory)
        data_same, differences = _compare_data(
            (raw.get("reproduce") or {}).get("data") or raw.get("data") or {},
            (retrained_raw.get("reproduce") or {}).get("data") or retrained_raw.get("data") or {},
        )
        report = Reproduction(
            directory=directory,
            options={k: getattr(options, k) for k in recorded if hasattr(options, k)},
            files=files,
            data_same=data_same,
            data_differences=differences,
            ignored_options=ignored,
        )
        _compare_predictions(engine, directory, result.directory, options.as_of, report)
    code = (raw.get("reproduce") or {}).get("code_version") or raw.get("code_version")
    if code and code != result.manifest.code_version:
        report.notes.append(f"trained by code {code}, retrained by {result.manifest.code_version}")
    return report


def _compare_predictions(
    engine: Engine, original: Path, retrained: Path, as_of: dt.datetime, report: Reproduction
) -> None:
    """Largest CLV and churn differences over every customer known at `as_of`."""
    try:
        old, new = Predictor(original), Predictor(retrained)
    except (ArtifactMismatch, ValueError) as exc:
        report.notes.append(f"predictions not compared: {exc}")
        return
    clv_diff = churn_diff = 0.0
    for part in offline_features(engine, as_of):
        a, b = old.predict(part.values), new.predict(part.values)
        clv_diff = max(clv_diff, float(np.max(np.abs(a.clv - b.clv), initial=0.0)))
        churn_diff = max(
            churn_diff,
            float(np.max(np.abs(a.churn_probability - b.churn_probability), initial=0.0)),
        )
        report.rows_compared += len(part)
    report.max_clv_diff, report.max_churn_diff = clv_diff, churn_diff
