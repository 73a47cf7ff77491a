"""XGBoost -> ONNX export and the parity check that gates every artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xgboost as xgb
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

from app.artifacts import Parity

# The session helpers live with serving (app.scoring.onnx); re-exported here for training code.
from app.scoring.onnx import INPUT_NAME, onnx_churn, onnx_clv, onnx_session

__all__ = [
    "INPUT_NAME",
    "check_parity",
    "native_predict",
    "onnx_churn",
    "onnx_clv",
    "onnx_session",
    "to_onnx",
]
TARGET_OPSET = 15
#: float32 inputs on both sides; what remains is float32 summation order in the trees.
TOLERANCE = {"clv_rel": 1e-4, "clv_abs": 1e-3, "churn_abs": 1e-5}


def to_onnx(booster: xgb.Booster, n_features: int, path: Path) -> None:
    """Convert a booster (trained on unnamed features f0..fN) and write it to `path`."""
    model = convert_xgboost(
        booster,
        # A fixed graph name: onnxmltools would pick a random uuid4, and the bytes would differ.
        name=path.stem,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
    )
    # onnxmltools lists the opset imports in set order, which varies with Python's string hash
    # seed from run to run: sort them so the same booster always gives the same bytes.
    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in imports:
        model.opset_import.add(domain=domain, version=version)
    path.write_bytes(model.SerializeToString())


def native_predict(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """Predictions of the native booster on float32 inputs (what ONNX sees)."""
    matrix = xgb.DMatrix(np.asarray(features, dtype=np.float32))
    return np.asarray(booster.predict(matrix), dtype=np.float64)


def check_parity(
    clv: xgb.Booster, churn: xgb.Booster, clv_path: Path, churn_path: Path, features: np.ndarray
) -> Parity:
    """Compare native and ONNX predictions on `features`; `passed` is False beyond TOLERANCE."""
    native_clv, native_churn = native_predict(clv, features), native_predict(churn, features)
    onnx_clv_values = onnx_clv(onnx_session(clv_path), features)
    onnx_churn_values = onnx_churn(onnx_session(churn_path), features)
    clv_abs = np.abs(onnx_clv_values - native_clv)
    clv_rel = clv_abs / np.maximum(np.abs(native_clv), 1e-9)
    churn_abs = np.abs(onnx_churn_values - native_churn)
    clv_ok = bool(np.all((clv_rel <= TOLERANCE["clv_rel"]) | (clv_abs <= TOLERANCE["clv_abs"])))
    churn_ok = bool(np.all(churn_abs <= TOLERANCE["churn_abs"]))
    return Parity(
        rows=len(features),
        clv_max_abs_diff=float(clv_abs.max(initial=0.0)),
        clv_max_rel_diff=float(clv_rel.max(initial=0.0)),
        churn_max_abs_diff=float(churn_abs.max(initial=0.0)),
        tolerance=TOLERANCE,
        passed=clv_ok and churn_ok,
    )


def check_parity_one(
    booster: xgb.Booster, path: Path, features: np.ndarray, target: str
) -> tuple[dict[str, float], bool]:
    """Native vs ONNX for one extra model (issue 11): the orders regressor uses the CLV
    tolerance (relative or absolute), the propensity classifier the churn one."""
    native = native_predict(booster, features)
    session = onnx_session(path)
    exported = (
        onnx_churn(session, features) if target == "propensity" else onnx_clv(session, features)
    )
    absolute = np.abs(exported - native)
    relative = absolute / np.maximum(np.abs(native), 1e-9)
    if target == "propensity":
        ok = bool(np.all(absolute <= TOLERANCE["churn_abs"]))
    else:
        ok = bool(np.all((relative <= TOLERANCE["clv_rel"]) | (absolute <= TOLERANCE["clv_abs"])))
    diffs = {
        "rows": float(len(features)),
        "max_abs_diff": float(absolute.max(initial=0.0)),
        "max_rel_diff": float(relative.max(initial=0.0)),
    }
    return diffs, ok
