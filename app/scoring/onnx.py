"""onnxruntime sessions and the two model calls: what serving needs of ONNX, nothing of training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

#: The name of the one input of every exported model (features f0..fN, float32).
INPUT_NAME = "input"


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
