"""Handlers for quantized ONNX operators: QDQ, QOperator and integer kernels.

Every form becomes :class:`~vnncomp_qeb.ir.ops.FakeQuant` plus linear ops on real values.
Weights are dequantized exactly in float64 (``s·(q − z)`` with the float32 scale read as is);
the fused kernels' float32 multiplier error is the analyses' business (docs/design.md §2.3).
"""

from __future__ import annotations

import numpy as np
import onnx

from vnncomp_qeb.io.onnx_context import INT_RANGES, LoadContext, QTag, attr, handles
from vnncomp_qeb.io.onnx_float_ops import integer_code
from vnncomp_qeb.ir import ops


def _optional(node: onnx.NodeProto, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _zero_point(ctx: LoadContext, name: str | None, default_type=onnx.TensorProto.UINT8):
    """(zero point as float64, ONNX integer type) of an optional zero-point input."""
    if name is None:
        return np.float64(0.0), default_type
    z = ctx.const(name)
    dtype = onnx.helper.np_dtype_to_tensor_dtype(z.dtype)
    return np.asarray(z, dtype=np.float64), dtype


def _int_range(ctx: LoadContext, dtype: int) -> tuple[float, float]:
    if dtype not in INT_RANGES:
        raise ctx.unsupported(f"quantized type {onnx.TensorProto.DataType.Name(dtype)}")
    lo, hi = INT_RANGES[dtype]
    return float(lo), float(hi)


def dequantize_const(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """Exact ``s·(q − z)`` of a constant, per-tensor or along ``axis``."""
    q = np.asarray(q, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    zp = np.asarray(zp, dtype=np.float64)
    if scale.size > 1:
        axis = axis + q.ndim if axis < 0 else axis
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zp = scale.reshape(shape), (zp.reshape(shape) if zp.size > 1 else zp)
    return scale * (q - zp)


def fake_quant(ctx: LoadContext, x: str, out: str, scale, zp, dtype: int, axis: int = 1) -> str:
    """Emit ``FakeQuant`` of variable ``x`` with ONNX (per-tensor or per-axis) parameters."""
    qmin, qmax = _int_range(ctx, dtype)
    s = ctx.per_axis(np.asarray(scale, dtype=np.float64), axis, x)
    z = ctx.per_axis(np.asarray(zp, dtype=np.float64), axis, x)
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise ctx.unsupported("quantization scale must be positive and finite")
    tag = QTag(s, z, qmin, qmax)
    return ctx.emit(ops.FakeQuant((x,), out, scale=s, zero_point=z, qmin=qmin, qmax=qmax), tag=tag)


def _flat_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal after broadcasting a per-tensor value against a per-axis one."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size == b.size:
        return bool(np.all(a == b))
    if min(a.size, b.size) == 1:
        return bool(np.all(a == b[0]) if b.size == 1 else np.all(b == a[0]))
    return False


def real_of(ctx: LoadContext, name: str, scale, zp) -> str:
    """IR tensor holding ``scale·(q − zp)`` for the integer ONNX tensor ``name``; ``scale`` and
    ``zp`` are scalars or already shaped to broadcast against the per-sample shape."""
    x = ctx.var(name)
    tag = ctx.tags.get(name)
    if tag is None:
        raise ctx.unsupported(f"tensor '{name}' is used as an integer tensor but was never quantized")
    if _flat_equal(scale, tag.scale) and _flat_equal(zp, tag.zero_point):
        return x
    # Other parameters than the producer used: q = r/s_t + z_t, value = s·(q − z).
    code = integer_code(ctx, x, tag, name)
    z = np.asarray(zp, dtype=np.float64)
    cur = ctx.emit(ops.AddConst((code,), ctx.fresh(name + "_rezp"), c=-z)) if np.any(z != 0) else code
    return ctx.emit(ops.MulConst((cur,), ctx.fresh(name + "_rescale"), c=np.asarray(scale, dtype=np.float64)))


def _real_operand(ctx: LoadContext, node: onnx.NodeProto, i: int):
    """Operand ``i`` of a QLinear op (value, scale, zero point at i, i+1, i+2): an IR variable
    name, or a float64 constant when the integer tensor is an initializer."""
    scale = ctx.const(node.input[i + 1])
    zp, _ = _zero_point(ctx, _optional(node, i + 2))
    if ctx.is_const(node.input[i]):
        return None, dequantize_const(ctx.const(node.input[i]), scale, zp, axis=-1)
    return real_of(ctx, node.input[i], scale, zp), None


@handles("QuantizeLinear")
def _quantize(ctx, node):
    if attr(node, "block_size", 0):
        raise ctx.unsupported("blocked quantization (block_size)")
    x = ctx.var(node.input[0])
    if node.input[0] in ctx.tags:
        raise ctx.unsupported("QuantizeLinear of a tensor that is already integer")
    zp, dtype = _zero_point(ctx, _optional(node, 2))
    dtype = attr(node, "output_dtype", 0) or dtype
    fake_quant(ctx, x, ctx.out_name(), ctx.const(node.input[1]), zp, dtype, attr(node, "axis", 1))


@handles("DequantizeLinear")
def _dequantize(ctx, node):
    scale = ctx.const(node.input[1])
    zp, _ = _zero_point(ctx, _optional(node, 2))
    axis = attr(node, "axis", 1)
    if np.asarray(scale).size > 1 and ctx.is_var(node.input[0]):
        scale = ctx.per_axis(scale, axis, node.input[0])
        zp = ctx.per_axis(zp, axis, node.input[0])
    ctx.bind(node.output[0], real_of(ctx, node.input[0], scale, zp))


def integer_weights(ctx: LoadContext, node: onnx.NodeProto, axis: int) -> np.ndarray:
    """``W − w_zp`` in float64 (the zero point per tensor or along ``axis``)."""
    if not ctx.is_const(node.input[1]):
        raise ctx.unsupported(f"{node.op_type} with a computed (non-constant) weight")
    W = ctx.const_f64(node.input[1])
    w_zp, _ = _zero_point(ctx, _optional(node, 3))
    if np.size(w_zp) > 1:
        shape = [1] * W.ndim
        shape[axis] = -1
        w_zp = np.reshape(w_zp, shape)
    return W - w_zp


@handles("QLinearMatMul")
def _qlinear_matmul(ctx, node):
    a, _ = _real_operand(ctx, node, 0)
    if a is None:
        raise ctx.unsupported("QLinearMatMul with a constant left operand")
    if not ctx.is_const(node.input[3]):
        raise ctx.unsupported("QLinearMatMul with a variable right operand")
    b_zp, _ = _zero_point(ctx, _optional(node, 5))
    W = dequantize_const(ctx.const(node.input[3]), ctx.const(node.input[4]), b_zp, axis=-1)
    if W.ndim != 2:
        raise ctx.unsupported(f"QLinearMatMul weight of rank {W.ndim}")
    acc = ctx.emit(ops.Affine((a,), ctx.out_name(0, "_acc"), W=W))
    y_zp, dtype = _zero_point(ctx, _optional(node, 7))
    fake_quant(ctx, acc, ctx.out_name(), ctx.const(node.input[6]), y_zp, dtype)


@handles("MatMulInteger")
def _matmul_integer(ctx, node):
    x = ctx.var(node.input[0])
    tag = ctx.tags.get(node.input[0])
    if tag is None or np.size(tag.scale) != 1:
        raise ctx.unsupported("MatMulInteger whose left operand is not a per-tensor quantized tensor")
    a_zp, _ = _zero_point(ctx, _optional(node, 2))
    B = integer_weights(ctx, node, axis=1)
    # acc = (q − a_zp) @ B with q = r/s + z_t; represented as s·acc = r @ B + s·(z_t − a_zp)·ΣB
    shift = float(tag.scale) * (float(tag.zero_point) - float(a_zp))
    bias = shift * B.sum(axis=0) if shift != 0 else None
    lo, hi = INT_RANGES[onnx.TensorProto.INT32]
    ctx.emit(ops.Affine((x,), ctx.out_name(), W=B, b=bias),
             tag=QTag(np.float64(tag.scale), np.float64(0.0), float(lo), float(hi)))


@handles("com.microsoft.QLinearAdd")
def _qlinear_add(ctx, node):
    a, ca = _real_operand(ctx, node, 0)
    b, cb = _real_operand(ctx, node, 3)
    pre = ctx.out_name(0, "_sum")
    if a is not None and b is not None:
        s = ctx.emit(ops.Add((a, b), pre))
    elif a is not None:
        s = ctx.emit(ops.AddConst((a,), pre, c=ctx.per_sample_const(cb, a)))
    elif b is not None:
        s = ctx.emit(ops.AddConst((b,), pre, c=ctx.per_sample_const(ca, b)))
    else:
        raise ctx.unsupported("QLinearAdd of two constants")
    c_zp, dtype = _zero_point(ctx, _optional(node, 7))
    fake_quant(ctx, s, ctx.out_name(), ctx.const(node.input[6]), c_zp, dtype)


@handles("com.microsoft.QGemm")
def _qgemm(ctx, node):
    if attr(node, "transA", 0):
        raise ctx.unsupported("QGemm with transA=1")
    a, _ = _real_operand(ctx, node, 0)
    if a is None:
        raise ctx.unsupported("QGemm with a constant left operand")
    B = np.asarray(ctx.const(node.input[3]), dtype=np.float64)
    b_scale = np.asarray(ctx.const(node.input[4]), dtype=np.float64)
    b_zp, _ = _zero_point(ctx, _optional(node, 5))
    trans_b = attr(node, "transB", 0)
    W = dequantize_const(B, b_scale, b_zp, axis=0 if trans_b else 1)
    W = W.T if trans_b else W
    alpha = attr(node, "alpha", 1.0)
    a_scale = np.asarray(ctx.const(node.input[1]), dtype=np.float64)
    bias = None
    if _optional(node, 6):  # int32 bias with scale s_a·s_b
        bias = np.asarray(ctx.const(node.input[6]), dtype=np.float64) * a_scale * b_scale
        bias = np.broadcast_to(bias, (W.shape[1],)).copy()
    if _optional(node, 7) is None:  # float output
        ctx.emit(ops.Affine((a,), ctx.out_name(), W=alpha * W, b=bias))
        return
    acc = ctx.emit(ops.Affine((a,), ctx.out_name(0, "_acc"), W=alpha * W, b=bias))
    y_zp, dtype = _zero_point(ctx, _optional(node, 8))
    fake_quant(ctx, acc, ctx.out_name(), ctx.const(node.input[7]), y_zp, dtype)
