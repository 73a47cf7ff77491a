"""XGBoost -> ONNX export and the parity check that gates every artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import xgboost as xgb
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

from app.artifacts import Parity

INPUT_NAME = "input"
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


def onnx_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session tuned for small batches: fixed threads, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_clv(session: ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    """Raw CLV predictions of the ONNX regressor."""
    out = session.run(None, {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)})
    return np.asarray(out[0], dtype=np.float64).ravel()


def onnx_churn(session: ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    """Churn probabilities (class 1) of the ONNX classifier."""
    out = session.run(None, {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)})
    return np.asarray(out[1], dtype=np.float64)[:, 1]


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
