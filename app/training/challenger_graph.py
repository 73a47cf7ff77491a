"""The challengers' ONNX graphs in float64, with the scaling inside (issue 11).

A challenger is `impute -> signed log1p -> standardise -> estimator` (app.training.challengers).
Its graph takes the served input (float32 `input`, [n, n_features], as every model of the
artifact) and casts it to float64 first, so every later step computes in the same precision as
scikit-learn. A float32 graph missed the parity tolerance on real logs (amounts of thousands and
day counts of hundreds lose their low digits; docs/challengers.md).

Why these steps are hand-built ONNX nodes rather than skl2onnx's converters: skl2onnx converts
PowerTransformer only in float32, and onnxruntime's `Imputer` and `Scaler` (ai.onnx.ml) have no
float64 kernel. Median imputation, `sign(x) * log(1 + |x|)` and `(x - mean) / scale` are a few
standard operators (IsNaN, Where, Abs, Log, Sign, Sub, Div), all with float64 kernels. The
estimator itself (Ridge, LogisticRegression, MLP*) is converted by skl2onnx with a float64 input:
MatMul, Add, Relu, Sigmoid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType

from app.scoring.onnx import INPUT_NAME

TARGET_OPSET = 15
#: The estimator's input inside the graph: the standardised float64 features.
SCALED = "prep_scaled"


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): log-like for heavy tails, defined for refunds' negative values.

    Written as log(1 + |x|), not np.log1p, because the graph computes Log(Add(Abs(x), 1)).
    """
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(np.sign(x) * np.log(1.0 + np.abs(x)), dtype=np.float64)


def signed_expm1(t: np.ndarray) -> np.ndarray:
    """The inverse of signed_log1p: sign(t) * (exp(|t|) - 1)."""
    t = np.asarray(t, dtype=np.float64)
    return np.asarray(np.sign(t) * (np.exp(np.abs(t)) - 1.0), dtype=np.float64)


def _const(name: str, values: np.ndarray | float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float64), name)


def preprocessing(
    median: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from the float32 `input` to the float64 standardised features `SCALED`."""
    make = helper.make_node
    nodes = [
        make("Cast", [INPUT_NAME], ["prep_x64"], to=TensorProto.DOUBLE, name="prep_cast"),
        make("IsNaN", ["prep_x64"], ["prep_missing"], name="prep_isnan"),
        make("Where", ["prep_missing", "prep_median", "prep_x64"], ["prep_x"], name="prep_impute"),
        make("Abs", ["prep_x"], ["prep_abs"], name="prep_abs"),
        make("Add", ["prep_abs", "prep_one"], ["prep_abs1"], name="prep_add1"),
        make("Log", ["prep_abs1"], ["prep_log"], name="prep_log"),
        make("Sign", ["prep_x"], ["prep_sign"], name="prep_sign"),
        make("Mul", ["prep_sign", "prep_log"], ["prep_slog"], name="prep_signed_log"),
        make("Sub", ["prep_slog", "prep_mean"], ["prep_centred"], name="prep_centre"),
        make("Div", ["prep_centred", "prep_scale"], [SCALED], name="prep_standardise"),
    ]
    initializers = [
        _const("prep_median", median),
        _const("prep_one", 1.0),
        _const("prep_mean", mean),
        _const("prep_scale", scale),
    ]
    return nodes, initializers


def inverse_target(
    output: str, smear: float
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from the regressor's margin `<output>_margin` to currency in `output`:
    smear * sign(t) * (exp(|t|) - 1)."""
    make = helper.make_node
    t = f"{output}_margin"
    nodes = [
        make("Abs", [t], ["post_abs"], name="post_abs"),
        make("Exp", ["post_abs"], ["post_exp"], name="post_exp"),
        make("Sub", ["post_exp", "post_one"], ["post_expm1"], name="post_expm1"),
        make("Sign", [t], ["post_sign"], name="post_sign"),
        make("Mul", ["post_sign", "post_expm1"], ["post_value"], name="post_signed"),
        make("Mul", ["post_value", "post_smear"], [output], name="clv_rescale"),
    ]
    return nodes, [_const("post_one", 1.0), _const("post_smear", smear)]


def estimator_graph(
    estimator: Any, n_features: int, name: str, classifier: bool
) -> onnx.ModelProto:
    """The fitted estimator alone, converted by skl2onnx on a float64 input named SCALED."""
    model: onnx.ModelProto = convert_sklearn(
        estimator,
        name=name,
        initial_types=[(SCALED, DoubleTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
        options={id(estimator): {"zipmap": False}} if classifier else None,
    )
    return model


def assemble(
    estimator: Any,
    prep: dict[str, np.ndarray],
    n_features: int,
    name: str,
    smear: float | None,
) -> onnx.ModelProto:
    """float32 `input` -> float64 preprocessing -> estimator (-> inverse target for regressors).

    `prep` holds the fitted `median`, `mean` and `scale` vectors; `smear` is None for a
    classifier (its outputs are kept: out[0] labels, out[1] [n, 2] probabilities).
    """
    model = estimator_graph(estimator, n_features, name, classifier=smear is None)
    graph = model.graph
    nodes, initializers = preprocessing(prep["median"], prep["mean"], prep["scale"])
    if smear is not None:
        output = graph.output[0].name
        margin = f"{output}_margin"
        for node in graph.node:
            node.output[:] = [margin if o == output else o for o in node.output]
        post_nodes, post_init = inverse_target(output, smear)
        graph.node.extend(post_nodes)
        graph.initializer.extend(post_init)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    graph.initializer.extend(initializers)
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])
    )
    # Same reason as app.training.export.to_onnx: a fixed order gives the same bytes every run.
    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in imports:
        model.opset_import.add(domain=domain, version=version)
    onnx.checker.check_model(model)
    return model
