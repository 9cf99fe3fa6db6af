"""Dynamic quantization (onnxruntime's ``quantize_dynamic``) and ``ConvInteger``.

``DynamicQuantizeLinear(x)`` returns codes ``q``, a scale ``s`` and a zero point ``z`` that are
all functions of the input. The IR cannot hold ``s`` as a constant, so the loader follows it
symbolically (:class:`DynValue`) through the pattern every exporter writes::

    q, s, z = DynamicQuantizeLinear(x)
    acc     = MatMulInteger(q, W, z, w_zp)   (or ConvInteger)     value s·acc = r @ (W − w_zp)
    accf    = Cast(acc, float)
    c       = Mul(s, w_scale)                                      value s·w_scale
    y       = Mul(accf, c)                                         value (r @ (W − w_zp))·w_scale

where ``r = s·(q − z)`` is the :class:`~vnncomp_qeb.ir.dynamic_quant.DynamicQuant` op's output.
Once the powers of ``s`` cancel, ``y`` is an ordinary IR tensor. Any other use of ``q``, ``s`` or
``z`` is refused with the node named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from vnncomp_qeb.io.onnx_context import INT_RANGES, FLOAT_TYPES, LoadContext, QTag, attr, handles
from vnncomp_qeb.io.onnx_conv_ops import _conv_map, _image, _one_d, _out_shape
from vnncomp_qeb.io.onnx_quant_ops import _optional, _zero_point, integer_weights
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.dynamic_quant import DynamicQuant

CODES, ZERO_POINT, SCALED = "codes", "zero point", "scaled"


@dataclass
class DynValue:
    """An ONNX tensor that depends on a runtime scale ``s`` of the DynamicQuant output ``source``:
    ``CODES`` (q) and ``ZERO_POINT`` (z) are only read by the integer kernels; ``SCALED`` is
    ``var · s^power · factor`` (``var`` None: the scalar 1, e.g. ``s`` itself is power 1)."""

    kind: str
    source: str
    var: str | None = None
    power: int = 0
    factor: np.ndarray | float = 1.0


@handles("DynamicQuantizeLinear")
def _dynamic_quantize(ctx: LoadContext, node: onnx.NodeProto) -> None:
    x = ctx.var(node.input[0])
    r = ctx.emit(DynamicQuant((x,), ctx.fresh(node.output[0] + "_dequantized")))
    outs = list(node.output) + [""] * (3 - len(node.output))
    for name, value in zip(outs, (DynValue(CODES, r), DynValue(SCALED, r, power=1), DynValue(ZERO_POINT, r))):
        if name:
            ctx.dynamic[name] = value


def reads_dynamic(ctx: LoadContext, node: onnx.NodeProto) -> bool:
    """Whether ``node`` reads a tensor that depends on a runtime quantization scale."""
    return any(n in ctx.dynamic for n in node.input if n)


def translate_dynamic(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Translate a node that reads runtime-scaled tensors (see the module docstring)."""
    kind = node.op_type if node.domain in ("", "ai.onnx") else None
    first = ctx.dynamic.get(node.input[0])
    if kind in ("MatMulInteger", "ConvInteger"):
        _integer_kernel(ctx, node)
    elif kind == "Cast" and attr(node, "to") in FLOAT_TYPES and first.kind == SCALED:
        ctx.dynamic[node.output[0]] = first  # its rounding: one of the kernel's extra steps
    elif kind == "Mul":
        _mul(ctx, node)
    elif kind in ("Identity", "Reshape", "Squeeze", "Unsqueeze") and first and first.kind == SCALED and first.var is None:
        ctx.dynamic[node.output[0]] = first  # the scalar scale reshaped
    else:
        raise _refused(ctx, node)


def _refused(ctx: LoadContext, node: onnx.NodeProto):
    names = [n for n in node.input if n in ctx.dynamic]
    return ctx.unsupported(
        f"reads {', '.join(repr(n) for n in names)}, computed from a runtime quantization scale "
        "(DynamicQuantizeLinear); modelled: MatMulInteger/ConvInteger of its codes and zero point, "
        "Cast to float, and Mul by the scale (times constants)")


def _operand(ctx: LoadContext, name: str) -> DynValue:
    if name in ctx.dynamic:
        return ctx.dynamic[name]
    if ctx.is_const(name):
        return DynValue(SCALED, "", factor=ctx.const_f64(name))
    return DynValue(SCALED, "", var=ctx.var(name))


def _mul(ctx: LoadContext, node: onnx.NodeProto) -> None:
    a, b = _operand(ctx, node.input[0]), _operand(ctx, node.input[1])
    sources = {v.source for v in (a, b) if v.source}
    if a.kind != SCALED or b.kind != SCALED or len(sources) != 1 or (a.var is not None and b.var is not None):
        raise _refused(ctx, node)
    var = a.var if a.var is not None else b.var
    value = DynValue(SCALED, sources.pop(), var, a.power + b.power, np.asarray(a.factor) * np.asarray(b.factor))
    if value.power != 0:
        ctx.dynamic[node.output[0]] = value
        return
    if var is None:
        raise ctx.unsupported("a runtime scale divided by itself")
    # the scale cancels: an ordinary tensor, the accumulator times a constant
    c = ctx.per_sample_const(np.asarray(value.factor, dtype=np.float64), var)
    ctx.emit(ops.MulConst((var,), ctx.out_name(), c=c))


def _integer_kernel(ctx: LoadContext, node: onnx.NodeProto) -> None:
    codes, zp = ctx.dynamic.get(node.input[0]), ctx.dynamic.get(_optional(node, 2) or "")
    if codes is None or codes.kind != CODES or zp is None or zp.kind != ZERO_POINT or zp.source != codes.source:
        raise _refused(ctx, node)
    if any(n in ctx.dynamic for n in node.input[1:2] + node.input[3:4]):
        raise _refused(ctx, node)
    # acc = kernel(q − z, W − w_zp), so s·acc = kernel(r, W − w_zp); the Cast to float and the
    # product with the rounded s·w_scale are two more float32 roundings
    out = ctx.fresh(node.output[0] + "_rescaled")
    if node.op_type == "MatMulInteger":
        emit_matmul_integer(ctx, node, codes.source, out)
    else:
        emit_conv_integer(ctx, node, codes.source, out)
    ctx.dynamic[node.output[0]] = DynValue(SCALED, codes.source, out, power=-1)


def emit_matmul_integer(ctx: LoadContext, node: onnx.NodeProto, x: str, out: str, bias=None) -> str:
    """``x @ (W − w_zp)`` (with the kernel's float steps) for a MatMulInteger reading ``x``'s codes."""
    B = integer_weights(ctx, node, axis=1)
    if B.ndim != 2:
        raise ctx.unsupported(f"MatMulInteger weight of rank {B.ndim}")
    return ctx.emit(ops.Affine((x,), out, W=B, b=bias, extra_steps=2))


def emit_conv_integer(ctx: LoadContext, node: onnx.NodeProto, x: str, out: str) -> str:
    """The convolution of ``x`` with ``W − w_zp`` (per output channel), zero-padded: ConvInteger
    subtracts the input's zero point before padding, so padding is a real 0."""
    _, shape = _image(ctx, x)
    K = integer_weights(ctx, node, axis=0)
    M, out_shape = _conv_map(ctx, node, shape, K, _one_d(ctx, x))
    acc = ctx.emit(ops.Affine((x,), out, W=M, extra_steps=2))
    ctx.logical[acc] = _out_shape(ctx, x, out_shape)
    return acc


@handles("ConvInteger")
def _conv_integer(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """ConvInteger of a statically quantized tensor: like MatMulInteger, the IR holds ``s·acc``."""
    x = ctx.var(node.input[0])
    tag = ctx.tags.get(node.input[0])
    if tag is None or np.size(tag.scale) != 1:
        raise ctx.unsupported("ConvInteger whose input is not a per-tensor quantized tensor")
    x_zp, _ = _zero_point(ctx, _optional(node, 2))
    if np.size(x_zp) != 1:
        raise ctx.unsupported("ConvInteger with a per-channel input zero point")
    # q − x_zp = r/s + (z_t − x_zp): shift r first, so the zero padding stays a real 0
    shift = float(tag.scale) * (float(tag.zero_point) - float(x_zp))
    if shift != 0:
        x = ctx.emit(ops.AddConst((x,), ctx.fresh(node.input[0] + "_shifted"), c=np.float64(shift)))
    lo, hi = INT_RANGES[onnx.TensorProto.INT32]
    acc = emit_conv_integer(ctx, node, x, ctx.out_name())
    ctx.tags[acc] = QTag(np.float64(tag.scale), np.float64(0.0), float(lo), float(hi))
