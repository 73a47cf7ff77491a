"""Provenance written into every manifest: code version, reproduce section, served quantiles."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxmltools
import xgboost as xgb

from app import __version__
from app.artifacts import quantile_levels


def code_version() -> str:
    """This code's version, with the git commit when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.CalledProcessError):
        return __version__


def quantiles(values: np.ndarray) -> dict[str, float]:
    """p1..p99 of `values` (zeros when empty)."""
    if not len(values):
        return {f"p{q}": 0.0 for q in quantile_levels()}
    return {f"p{q}": float(np.percentile(values, q)) for q in quantile_levels()}


def reproduce_section(options: Any, data: dict[str, Any], code: str) -> dict[str, Any]:
    """What `clv reproduce` needs to rebuild TrainOptions and check it is fed the same data."""
    skip = {"model_dir", "progress", "force", "promote"}
    values = {
        f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in skip
    }
    values["as_of"] = options.as_of.isoformat()
    return {
        "options": values,
        "data": data,
        "code_version": code,
        "libraries": {
            "xgboost": xgb.__version__,
            "onnxmltools": onnxmltools.__version__,
            "numpy": np.__version__,
        },
    }
