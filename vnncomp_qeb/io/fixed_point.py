"""QEBVerif's fixed-point networks (docs/design.md §2.5) as ONNX: the quantiser and faithful twins.

The input is an 8-bit integer ``x`` (MNIST pixels 0..255; ACAS Xu ``round(z·256)`` in
−128..127), snapped once by a QuantizeLinear of scale 1. The quantized net sees ``x/256``, the
float net ``x/255``. Everything after the snap is float64 and, on the quantized side, dyadic,
so onnxruntime computes QEBVerif's integer semantics exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

IR_VERSION = 8
OPSET = 13


@dataclass
class QebNet:
    """A QEBVerif network: float layers ``y = x @ W + b`` and its meta (family, bit layout)."""

    name: str
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    meta: dict

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def signed_input(self) -> bool:
        return self.family == "acasxu"

    @property
    def input_size(self) -> int:
        return self.weights[0].shape[0]

    @property
    def output_size(self) -> int:
        return self.weights[-1].shape[1]

    def fractional_bits(self, Q: int) -> tuple[int, int, int]:
        """(F_w, F_b, F_a): weights Q−1 (MNIST) or Q−2 (ACAS Xu); bias and activations Q−2."""
        return (Q - 1 if self.family == "mnist" else Q - 2), Q - 2, Q - 2

    def float_forward(self, x_int: np.ndarray) -> np.ndarray:
        """The float network on integer inputs (seen as ``x/255``), float64."""
        a = np.asarray(x_int, dtype=np.float64)
        for k, (W, b) in enumerate(zip(self.weights, self.biases)):
            W = W.astype(np.float64) / 255.0 if k == 0 else W.astype(np.float64)
            a = a @ W + b.astype(np.float64)
            if k < len(self.weights) - 1:
                a = np.maximum(a, 0.0)
        return a


def load_qebnet(path: str) -> QebNet:
    """Read a QEBVerif ``.npz`` (float weights ``W{k}``, ``b{k}`` and ``meta``)."""
    z = np.load(path)
    n = int(z["n_layers"])
    meta = json.loads(str(z["meta"]))
    name = path.rsplit("/", 1)[-1].removesuffix(".npz")
    return QebNet(name, [z[f"W{k}"] for k in range(n)], [z[f"b{k}"] for k in range(n)], meta)


def quantise(v: np.ndarray, Q: int, F: int) -> np.ndarray:
    """``round_half_away(clip(v·2^F, −2^(Q−1), 2^(Q−1)−1))`` as int64 (QEBVerif's quantiser)."""
    t = np.clip(np.asarray(v, dtype=np.float64) * 2.0**F, -(2.0 ** (Q - 1)), 2.0 ** (Q - 1) - 1)
    return (np.sign(t) * np.floor(np.abs(t) + 0.5)).astype(np.int64)


def fixed_point_layers(net: QebNet, Q: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Integer weights and biases of every layer for ``Q`` bits."""
    F_w, F_b, _ = net.fractional_bits(Q)
    return [(quantise(W, Q, F_w), quantise(b, Q, F_b)) for W, b in zip(net.weights, net.biases)]


class _Builder:
    """Tiny helper: named nodes and double constants."""

    def __init__(self, prefix: str):
        self.p = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, value, dtype=np.float64) -> str:
        self.n += 1
        name = f"{self.p}c{self.n}"
        self.inits.append(nh.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.n += 1
        out = f"{self.p}t{self.n}"
        self.nodes.append(h.make_node(op, inputs, [out], name=f"{self.p}{op}_{self.n}", **attrs))
        return out


def _snapped_input(b: _Builder, signed: bool) -> str:
    """X (float32, integer units) → the integer x as float64, via QuantizeLinear of scale 1."""
    zp = b.const(0, np.int8 if signed else np.uint8)
    q = b.node("QuantizeLinear", ["X", b.const(1.0, np.float32), zp])
    dq = b.node("DequantizeLinear", [q, b.const(1.0, np.float32), zp])
    return b.node("Cast", [dq], to=TensorProto.DOUBLE)


def _float_branch(b: _Builder, net: QebNet, x: str) -> str:
    # x/255 is folded into the first weights: onnxruntime would otherwise fuse Div + MatMul
    # into FusedMatMul with a float32 alpha = fl32(1/255), off by ~1e-7 relative
    cur = x
    for k, (W, bias) in enumerate(zip(net.weights, net.biases)):
        W = W.astype(np.float64) / 255.0 if k == 0 else W
        cur = b.node("Add", [b.node("MatMul", [cur, b.const(W)]), b.const(bias)])
        if k < len(net.weights) - 1:
            cur = b.node("Relu", [cur])
    return cur


def _fixed_point_branch(b: _Builder, net: QebNet, Q: int, x: str) -> str:
    F_w, F_b, F_a = net.fractional_bits(Q)
    cur = b.node("Div", [x, b.const(256.0)])
    layers = fixed_point_layers(net, Q)
    for k, (W_int, b_int) in enumerate(layers):
        z = b.node("Add", [b.node("MatMul", [cur, b.const(W_int / 2.0**F_w)]), b.const(b_int / 2.0**F_b)])
        if k == len(layers) - 1:
            return z  # output layer: real-valued, no rounding, no clamp
        # a = clamp(floor(z·2^F_a + 0.5), 0, 2^Q − 1) / 2^F_a
        t = b.node("Floor", [b.node("Add", [b.node("Mul", [z, b.const(2.0**F_a)]), b.const(0.5)])])
        cur = b.node("Div", [b.node("Clip", [t, b.const(0.0), b.const(2.0**Q - 1)]), b.const(2.0**F_a)])
    return cur


def _model(b: _Builder, net: QebNet, out: str, doc: str) -> onnx.ModelProto:
    b.nodes.append(h.make_node("Identity", [out], ["Y"], name=f"{b.p}output"))
    graph = h.make_graph(b.nodes, net.name, [h.make_tensor_value_info("X", TensorProto.FLOAT, [1, net.input_size])],
                         [h.make_tensor_value_info("Y", TensorProto.DOUBLE, [1, net.output_size])], b.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                         producer_name="vnncomp-qeb fixed_point", doc_string=doc)
    onnx.checker.check_model(model)
    return model


def faithful_twin(net: QebNet, Q: int) -> onnx.ModelProto:
    """Difference model ``Y = N(x/255) − Q(x/256)`` with the input snapped once for both."""
    b = _Builder("")
    x = _snapped_input(b, net.signed_input)
    n_out = _float_branch(_prefixed(b, "N_"), net, x)
    q_out = _fixed_point_branch(_prefixed(b, "Q_"), net, Q, x)
    diff = b.node("Sub", [n_out, q_out])
    return _model(b, net, diff, f"QEBVerif twin of {net.name}, Q={Q}: Y = N(x/255) - Q(x/256), x = 8-bit input")


def float_model(net: QebNet) -> onnx.ModelProto:
    """The float network alone, on the same snapped integer input (VNN-LIB 2.0 pairs)."""
    b = _Builder("N_")
    return _model(b, net, _float_branch(b, net, _snapped_input(b, net.signed_input)), f"{net.name} float, input x/255")


def fixed_point_model(net: QebNet, Q: int) -> onnx.ModelProto:
    """The fixed-point network alone (VNN-LIB 2.0 pairs)."""
    b = _Builder("Q_")
    out = _fixed_point_branch(b, net, Q, _snapped_input(b, net.signed_input))
    return _model(b, net, out, f"{net.name} fixed point Q={Q}, input x/256")


def _prefixed(parent: _Builder, prefix: str) -> _Builder:
    """A builder that writes into ``parent``'s lists with its own name prefix."""
    child = _Builder(prefix)
    child.nodes, child.inits = parent.nodes, parent.inits
    return child
