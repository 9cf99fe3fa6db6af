"""Graph rewrites onnxruntime applies at load time that change what a model computes.

Two basic-level transformers of onnxruntime (measured on 1.31, CPU provider, default session
options; docs/design.md §2.3.2) do. ``DoubleQDQPairsRemover`` replaces ``Q1 → DQ1 → Q2 → DQ2``
(same integer type, each pair with equal scalar parameters, nothing else reading the middle) by
one ``Q → DQ`` whose range is the intersection of the two ranges: ``s = (hi − lo)/(qmax − qmin)``,
``z = round_half_away(qmin − lo/s)`` in float32 — a single rounding on a finer grid, not two.
:func:`remove_double_qdq` does the same.

``WeightBiasQuantization`` quantizes the *float* weights and bias of a linear layer that sits in
a QDQ group: a ``Conv`` or ``Gemm`` (also ``MatMul`` → ``Add`` of a
rank-1 constant on a rank-2 input, which it first fuses into a ``Gemm``) whose input comes
straight from a ``DequantizeLinear`` with one scale and whose output is read by exactly one node,
a ``QuantizeLinear``:

- a float32 weight initializer becomes ``DQ(Q(W))``, int8 per tensor with the asymmetric
  parameters of ``GetQuantizationParameter`` (range widened to hold 0, ``s = (hi − lo)/255``,
  ``z = round_half_even(clip(−128 − lo/s, −128, 127))``);
- a float32 rank-1 bias becomes ``DQ(int32(round_half_even(b / (s_x·s_w))), s_x·s_w)``, per
  output channel where the weight's scale is.

:func:`quantize_like_onnxruntime` replaces those initializers by the same values, so a network
whose weights are float between quantized activations is analysed with the int8 weights
onnxruntime uses (bounds on the float weights would not hold: tests/test_ort_rewrites.py).
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


def as_onnxruntime_runs_it(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` rewritten as onnxruntime rewrites it when it loads it (the model itself when
    nothing applies)."""
    return quantize_like_onnxruntime(remove_double_qdq(model))


# ops onnxruntime folds when their inputs are constants, before the QDQ rewrites read them
_FOLDED = {"Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Add", "Sub", "Mul", "Div", "Identity",
           "Concat", "Flatten", "Neg", "Gather", "Slice", "Expand", "Tile", "Min", "Max", "Abs", "ConstantOfShape"}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every tensor onnxruntime knows before running: initializers, Constant nodes, and the nodes
    of constants it folds."""
    from onnx.reference import ReferenceEvaluator

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if value is not None:
                consts[n.output[0]] = numpy_helper.to_array(value)
        elif n.op_type in _FOLDED and n.input and all(i in consts for i in n.input if i):
            try:
                outs = ReferenceEvaluator(n).run(None, {i: consts[i] for i in n.input if i})
            except Exception:  # noqa: BLE001 - not folded here: its output stays a variable
                continue
            consts.update({name: np.asarray(v) for name, v in zip(n.output, outs)})
    return consts


_QDQ_TYPES = {onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8,
              onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT16: np.int16}


def _readers(g: onnx.GraphProto) -> dict[str, list]:
    """The nodes reading each tensor."""
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def _producers(g: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in g.node for o in n.output}


def remove_double_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Q1 → DQ1 → Q2 → DQ2…`` collapsed as onnxruntime's DoubleQDQPairsRemover collapses it."""
    producer = _producers(model.graph)
    kind = lambda name: getattr(producer.get(name), "op_type", None)  # noqa: E731
    if not any(n.op_type == "QuantizeLinear" and kind(n.input[0]) == "DequantizeLinear"
               and kind(producer[n.input[0]].input[0]) == "QuantizeLinear" for n in model.graph.node):
        return model  # no Q → DQ → Q at all: nothing to copy or fold
    changed = False
    while True:
        step = _remove_one_double_qdq(model if changed else onnx.ModelProto.FromString(model.SerializeToString()))
        if step is None:
            return model
        model, changed = step, True


def _remove_one_double_qdq(model: onnx.ModelProto) -> onnx.ModelProto | None:
    g = model.graph
    consts = _constants(model)
    readers = _readers(g)
    outputs = {o.name for o in g.output}

    def params(node):
        """(scale, zero point as its numpy type) of a scalar constant-parameter Q/DQ, or None."""
        if len(node.input) < 2 or node.input[1] not in consts or np.size(consts[node.input[1]]) != 1:
            return None
        if len(node.input) > 2 and node.input[2]:
            zp = consts.get(node.input[2])
            if zp is None or np.size(zp) != 1:
                return None
        else:
            dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), onnx.TensorProto.UINT8)
            zp = np.zeros((), _QDQ_TYPES.get(dtype, np.uint8))
        return np.asarray(consts[node.input[1]]).reshape(()), np.asarray(zp).reshape(())

    def same(a, b):
        return a is not None and b is not None and a[1].dtype == b[1].dtype and a[0] == b[0] and a[1] == b[1]

    def only_reader(name):
        r = readers.get(name, [])
        return r[0] if len(r) == 1 and name not in outputs else None

    for q1 in g.node:
        if q1.op_type != "QuantizeLinear" or q1.domain not in ("", "ai.onnx"):
            continue
        dq1 = only_reader(q1.output[0])
        if dq1 is None or dq1.op_type != "DequantizeLinear" or not same(params(q1), params(dq1)):
            continue
        q2 = only_reader(dq1.output[0])
        if q2 is None or q2.op_type != "QuantizeLinear" or q2.output[0] in outputs:
            continue
        p1, p2 = params(q1), params(q2)
        if p2 is None or p1[1].dtype != p2[1].dtype or p1[1].dtype.type not in _QDQ_TYPES.values():
            continue
        dq2s = readers.get(q2.output[0], [])
        if not dq2s or any(d.op_type != "DequantizeLinear" or not same(p2, params(d)) for d in dq2s):
            continue
        if p1[0].dtype != np.float32 or p2[0].dtype != np.float32:
            continue
        new = _merged_params(p1, p2)
        if new is None:
            continue
        scale_name, zp_name = f"{q1.output[0]}__scale_as_onnxruntime", f"{q1.output[0]}__zp_as_onnxruntime"
        g.initializer.extend([numpy_helper.from_array(np.array([new[0]], np.float32), scale_name),
                              numpy_helper.from_array(np.array([new[1]], p1[1].dtype), zp_name)])
        for node in [q1] + dq2s:
            while len(node.input) < 3:
                node.input.append("")
            node.input[1], node.input[2] = scale_name, zp_name
        for d in dq2s:
            d.input[0] = q1.output[0]
        keep = [n for n in g.node if n is not dq1 and n is not q2]
        del g.node[:]
        g.node.extend(keep)
        return model
    return None


def _merged_params(p1, p2):
    """onnxruntime's ``FindNewZeroPointAndScale``: (scale, zero point) over the intersection of
    the two quantizers' ranges, in float32; None where the zero point does not fit the type."""
    (s1, z1), (s2, z2) = p1, p2
    if z1 == z2 and abs(F32(s1) - F32(s2)) < 1e-20:
        return F32(s1), z1
    info = np.iinfo(z1.dtype)
    qmin, qmax = F32(info.min), F32(info.max)
    lo = max(F32(qmin - F32(z1)) * F32(s1), F32(qmin - F32(z2)) * F32(s2))
    hi = min(F32(qmax - F32(z1)) * F32(s1), F32(qmax - F32(z2)) * F32(s2))
    scale = F32((hi - lo) / F32(qmax - qmin))
    if not scale > 0:
        return None
    t = F32(qmin - F32(lo / scale))
    z = np.floor(np.abs(t) + 0.5) * np.sign(t)  # std::round: half away from zero
    if not info.min <= z <= info.max:
        return None
    return scale, np.asarray(z).astype(z1.dtype).reshape(())


def quantize_like_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the weights and biases onnxruntime's WeightBiasQuantization would quantize
    replaced by their quantized values (the model itself when nothing applies)."""
    g = model.graph
    producer = _producers(g)
    if not any(n.op_type in ("Conv", "Gemm", "MatMul") and n.input
               and getattr(producer.get(n.input[0]), "op_type", None) == "DequantizeLinear" for n in g.node):
        return model  # no linear layer reads a DequantizeLinear: nothing to fold or quantize
    consts = _constants(model)
    readers = _readers(g)
    ranks: dict[str, int] | None = None  # shape inference only where a MatMul could be fused
    changes: dict[tuple[int, int], np.ndarray] = {}  # (node index, input index) → new constant
    index = {id(n): k for k, n in enumerate(g.node)}

    def float_init(name):
        t = consts.get(name)
        return t if t is not None and t.dtype == np.float32 else None

    def const_of(name):
        return consts.get(name)

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
            if len(other) != 1 or add.input[other[0]] not in consts:
                continue
            lin, out, bias_at = node, add.output[0], (add, other[0])
        else:
            continue
        dq = producer.get(lin.input[0])
        if (dq is None or dq.op_type != "DequantizeLinear" or const_of(dq.input[1]) is None
                or np.size(const_of(dq.input[1])) != 1):
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
            if const_of(w_dq.input[1]) is None:
                continue
            w_scale = np.asarray(const_of(w_dq.input[1]), dtype=F32)
            if w_scale.size != 1 and w_scale.size != bias.size:
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
