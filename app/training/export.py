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
    _fix_binary_base_value(booster, model)
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
    return compare(
        native_predict(clv, features),
        native_predict(churn, features),
        clv_path,
        churn_path,
        features,
    )


def compare(
    native_clv: np.ndarray,
    native_churn: np.ndarray,
    clv_path: Path,
    churn_path: Path,
    features: np.ndarray,
) -> Parity:
    """The parity rule, whatever produced the native predictions (XGBoost or a challenger):
    CLV within TOLERANCE relative or absolute, churn within its absolute tolerance."""
    clv_abs = np.abs(onnx_clv(onnx_session(clv_path), features) - native_clv)
    clv_rel = clv_abs / np.maximum(np.abs(native_clv), 1e-9)
    churn_abs = np.abs(onnx_churn(onnx_session(churn_path), features) - native_churn)
    return Parity(
        rows=len(features),
        clv_max_abs_diff=float(clv_abs.max(initial=0.0)),
        clv_max_rel_diff=float(clv_rel.max(initial=0.0)),
        churn_max_abs_diff=float(churn_abs.max(initial=0.0)),
        tolerance=TOLERANCE,
        passed=_clv_within(clv_abs, clv_rel) and bool(np.all(churn_abs <= TOLERANCE["churn_abs"])),
    )


def _clv_within(absolute: np.ndarray, relative: np.ndarray) -> bool:
    return bool(np.all((relative <= TOLERANCE["clv_rel"]) | (absolute <= TOLERANCE["clv_abs"])))


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
        ok = _clv_within(absolute, relative)
    diffs = {
        "rows": float(len(features)),
        "max_abs_diff": float(absolute.max(initial=0.0)),
        "max_rel_diff": float(relative.max(initial=0.0)),
    }
    return diffs, ok


#: The four models of an artifact in one graph, in this output order (issue 11): one
#: onnxruntime call per single prediction instead of four (each call costs tens of µs).
COMBINED_OUTPUTS = (("clv", 0), ("churn", 1), ("orders", 0), ("propensity", 1))


def combine(paths: dict[str, Path], out: Path) -> None:
    """One ONNX graph holding the CLV, churn, orders and propensity models side by side.

    Every node and edge of a model is prefixed with its target's name except the shared input;
    the graph's outputs are the regressors' values and the classifiers' probabilities, in
    COMBINED_OUTPUTS order. The nodes are the exported ones, unchanged, so the numbers are the
    same as the four files' (checked by check_combined). Hand-written because onnx.compose
    merges models in series (outputs into inputs), not side by side on one input.
    """
    import onnx
    from onnx import helper

    nodes, outputs, initializers = [], [], []
    opsets: dict[str, int] = {}
    graph_input = None
    ir_version = 0
    for target, index in COMBINED_OUTPUTS:
        model = onnx.load(str(paths[target]))
        ir_version = max(ir_version, model.ir_version)
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        graph_input = graph_input or model.graph.input[0]

        def named(edge: str, prefix: str = f"{target}/") -> str:
            return edge if edge in (INPUT_NAME, "") else prefix + edge

        for i, node in enumerate(model.graph.node):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"{target}/{i}/{node.name}"
            copy.input[:] = [named(e) for e in node.input]
            copy.output[:] = [named(e) for e in node.output]
            nodes.append(copy)
        for initializer in model.graph.initializer:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(initializer)
            tensor.name = named(initializer.name)
            initializers.append(tensor)
        output = onnx.ValueInfoProto()
        output.CopyFrom(model.graph.output[index])
        output.name = named(output.name)
        outputs.append(output)
    assert graph_input is not None
    graph = helper.make_graph(nodes, out.stem, [graph_input], outputs, initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        ir_version=ir_version,
        producer_name="clv-service",
    )
    onnx.checker.check_model(model)
    out.write_bytes(model.SerializeToString())


def check_combined(paths: dict[str, Path], combined: Path, features: np.ndarray) -> float:
    """Largest difference between the combined graph and the four files on `features`."""
    outputs = onnx_session(combined).run(
        None, {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)}
    )
    worst = 0.0
    for (target, index), values in zip(COMBINED_OUTPUTS, outputs, strict=True):
        session = onnx_session(paths[target])
        alone = onnx_churn(session, features) if index else onnx_clv(session, features)
        mine = np.asarray(values, dtype=np.float64)
        mine = mine[:, 1] if index else mine.ravel()
        worst = max(worst, float(np.abs(mine - alone).max(initial=0.0)))
    return worst


def _fix_binary_base_value(booster: xgb.Booster, model: object) -> None:
    """Give a binary:logistic graph the intercept as a margin, logit(base_score).

    onnxmltools (1.15, XGBConverter) copies base_score untransformed when the first tree is a
    single leaf of value 0, as it is for a classifier that learnt nothing past its intercept: the
    graph then answered sigmoid(base_score) (0.52 for 0.09) where XGBoost answers base_score.
    Found by the parity gate on a small demo shop (container test); fixed here, not by retraining.
    """
    import json

    config = json.loads(booster.save_config())
    learner = config["learner"]
    if learner["objective"]["name"] != "binary:logistic":
        return
    base_score = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
    if base_score in (0.0, 1.0):
        return
    margin = float(-np.log(1.0 / np.float32(base_score) - 1.0))
    for node in model.graph.node:  # type: ignore[attr-defined]
        if node.op_type != "TreeEnsembleClassifier":
            continue
        for attribute in node.attribute:
            if attribute.name == "base_values" and len(attribute.floats) == 1:
                value = attribute.floats[0]
                if np.isclose(value, base_score, rtol=0, atol=1e-7) and not np.isclose(
                    value, margin, rtol=0, atol=1e-7
                ):
                    attribute.floats[0] = margin
