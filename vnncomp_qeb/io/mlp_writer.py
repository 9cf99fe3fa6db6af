"""Write a float32 ReLU MLP (``y = x @ W + b`` per layer) as an ONNX model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

IR_VERSION = 8  # the pinned onnxruntime reads up to 10; onnx itself writes newer


def mlp_model(weights: list[np.ndarray], biases: list[np.ndarray], name: str = "mlp",
              batch: int | str = 1) -> onnx.ModelProto:
    """MatMul + Add (+ Relu on hidden layers) in float32; input ``X`` [batch, in], output ``Y``."""
    nodes, inits, cur = [], [], "X"
    for k, (W, b) in enumerate(zip(weights, biases)):
        inits += [nh.from_array(np.asarray(W, dtype=np.float32), f"W{k}"),
                  nh.from_array(np.asarray(b, dtype=np.float32), f"b{k}")]
        nodes.append(h.make_node("MatMul", [cur, f"W{k}"], [f"m{k}"], name=f"matmul{k}"))
        out = "Y" if k == len(weights) - 1 else f"z{k}"
        nodes.append(h.make_node("Add", [f"m{k}", f"b{k}"], [out], name=f"add{k}"))
        if k < len(weights) - 1:
            nodes.append(h.make_node("Relu", [out], [f"a{k}"], name=f"relu{k}"))
            cur = f"a{k}"
    graph = h.make_graph(nodes, name, [h.make_tensor_value_info("X", TensorProto.FLOAT, [batch, weights[0].shape[0]])],
                         [h.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, weights[-1].shape[1]])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model
