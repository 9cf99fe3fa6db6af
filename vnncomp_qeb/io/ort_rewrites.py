"""Graph rewrites onnxruntime applies at load time that change what a model computes.

onnxruntime's basic-level ``WeightBiasQuantization`` transformer (measured on 1.31, CPU provider,
default session options; docs/design.md §2.3.2) quantizes the *float* weights and bias of a
linear layer that sits in a QDQ group: a ``Conv`` or ``Gemm`` (also ``MatMul`` → ``Add`` of a
rank-1 constant on a rank-2 input, which it first fuses into a ``Gemm``) whose input comes
straight from a ``DequantizeLinear`` with one scale and whose output is read by exactly one node,
a ``QuantizeLinear``:

- a float32 weight initializer becomes ``DQ(Q(W))``, int8 per tensor with the asymmetric
  parameters of ``GetQuantizationParameter`` (range widened to hold 0, ``s = (hi − lo)/255``,
  ``z = round_half_even(clip(−128 − lo/s, −128, 127))``);
- a float32 rank-1 bias becomes ``DQ(int32(round_half_even(b / (s_x·s_w))), s_x·s_w)``, per
  output channel where the weight's scale is.

The verifier reads what onnxruntime runs: the same values replace those initializers here, so a
network whose weights are float between quantized activations is analysed with the int8 weights
onnxruntime uses (bounds on the float weights would not hold: tests/test_torch_exports.py).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

F32 = np.float32


def _int8_params(w: np.ndarray) -> tuple[np.float32, np.int8]:
    """onnxruntime's ``GetQuantizationParameter<int8_t>`` (asymmetric, per tensor), in float32."""
    lo = min(F32(w.min()), F32(0))
    hi = max(F32(w.max()), F32(0))
    scale = F32(1) if hi == lo else F32((hi - lo) / F32(255))
    z = F32(-128) - lo / scale
    return scale, np.int8(np.rint(np.clip(z, F32(-128), F32(127))))


def fake_quant_weight(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """``DQ(Q(w))`` as onnxruntime computes it, and the weight scale."""
    w = np.asarray(w, dtype=F32)
    scale, zp = _int8_params(w)
    q = np.clip(np.rint(w / scale) + F32(zp), -128, 127)
    return ((q - F32(zp)).astype(F32) * scale).astype(F32), scale


def fake_quant_bias(b: np.ndarray, x_scale, w_scale) -> np.ndarray:
    """The int32-quantized bias, dequantized, with scale ``s_x·s_w`` (float32, per channel when
    ``w_scale`` is)."""
    scale = (F32(x_scale) * np.asarray(w_scale, dtype=F32)).astype(F32)
    q = np.rint((np.asarray(b, dtype=F32) / scale).astype(F32))
    return (q.astype(F32) * scale).astype(F32)


def quantize_like_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the weights and biases onnxruntime's WeightBiasQuantization would quantize
    replaced by their quantized values (the model itself when nothing applies)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for n in g.node:  # onnxruntime turns Constant nodes into initializers first
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if value is not None:
                inits[n.output[0]] = value
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    ranks: dict[str, int] | None = None  # shape inference only where a MatMul could be fused
    changes: dict[tuple[int, int], np.ndarray] = {}  # (node index, input index) → new constant
    index = {id(n): k for k, n in enumerate(g.node)}

    def float_init(name):
        t = inits.get(name)
        return numpy_helper.to_array(t) if t is not None and t.data_type == onnx.TensorProto.FLOAT else None

    def const_of(name):
        t = inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    for node in g.node:
        if node.op_type in ("Conv", "Gemm") and node.domain in ("", "ai.onnx"):
            lin, add, out = node, None, node.output[0]
            bias_at = (node, 2) if len(node.input) > 2 and node.input[2] else None
        elif node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
            nxt = readers.get(node.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type != "Add":
                continue
            ranks = _ranks(model) if ranks is None else ranks
            if ranks.get(node.input[0]) != 2:
                continue
            add = nxt[0]
            other = [k for k, i in enumerate(add.input) if i != node.output[0]]
            if len(other) != 1 or add.input[other[0]] not in inits:
                continue
            lin, out, bias_at = node, add.output[0], (add, other[0])
        else:
            continue
        dq = producer.get(lin.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or np.size(const_of(dq.input[1])) != 1:
            continue
        after = readers.get(out, [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        w_dq = producer.get(lin.input[1])
        w = None if w_dq is not None and w_dq.op_type == "DequantizeLinear" else float_init(lin.input[1])
        if w is None and (w_dq is None or w_dq.op_type != "DequantizeLinear"):
            continue
        bias = None
        if bias_at is not None:
            bias = float_init(bias_at[0].input[bias_at[1]])
            if bias is None or bias.ndim != 1:
                continue  # onnxruntime leaves the whole layer as it is
        if w is None and bias is None:
            continue
        if w is not None:
            w_new, w_scale = fake_quant_weight(w)
            changes[(index[id(lin)], 1)] = w_new
        else:
            w_scale = np.asarray(const_of(w_dq.input[1]), dtype=F32)
            if w_scale is None or (w_scale.size != 1 and w_scale.size != bias.size):
                continue
        if bias is not None:
            changes[(index[id(bias_at[0])], bias_at[1])] = fake_quant_bias(bias, const_of(dq.input[1]), w_scale)
    if not changes:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for (k, i), value in changes.items():
        node = model.graph.node[k]
        name = f"{node.input[i]}__as_onnxruntime_quantizes_it_{k}"
        model.graph.initializer.append(numpy_helper.from_array(value, name))
        node.input[i] = name
    return model


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor shape inference types (batch axis included)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model shape inference rejects: no MatMul is fused
        return {}
    out = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if v.type.tensor_type.HasField("shape"):
            out[v.name] = len(v.type.tensor_type.shape.dim)
    return out
