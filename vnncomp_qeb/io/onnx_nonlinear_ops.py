"""Handlers for the nonlinear ONNX operators whose rules live in :mod:`vnncomp_qeb.ir.nonlinear`:
smooth functions, Pow by a constant, comparisons with a constant (and Cast to bool, Not), Where,
Softmax, and Mul/Div of two computed tensors."""

from __future__ import annotations

import numpy as np
import onnx

from vnncomp_qeb.io.onnx_context import LoadContext, attr, handles
from vnncomp_qeb.io.onnx_float_ops import broadcast_var, broadcast_vars, operand, relu_parts, widened_by
from vnncomp_qeb.ir import nonlinear as nl
from vnncomp_qeb.ir import ops


@handles("Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Softplus")
def _smooth(ctx: LoadContext, node: onnx.NodeProto) -> None:
    ctx.emit(nl.Smooth((ctx.var(node.input[0]),), ctx.out_name(), fn=node.op_type))


@handles("Pow")
def _pow(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """``x^p`` for a constant exponent (per element where it is a tensor); ``c^x`` for a constant
    positive base, as ``exp(x·ln c)``."""
    if not ctx.is_const(node.input[1]):
        if not ctx.is_const(node.input[0]):
            raise ctx.unsupported("Pow of two computed tensors")
        x = ctx.var(node.input[1])
        base = ctx.per_sample_const(ctx.const(node.input[0]), x)
        if np.any(base <= 0):
            raise ctx.unsupported("Pow of a non-positive constant base by a computed exponent")
        scaled = ctx.emit(ops.MulConst((widened_by(ctx, x, base),), ctx.fresh(node.output[0] + "_log"), c=np.log(base)))
        ctx.emit(nl.Smooth((scaled,), ctx.out_name(), fn="Exp"))
        return
    x = ctx.var(node.input[0])
    p = ctx.per_sample_const(ctx.const(node.input[1]), x)
    x = widened_by(ctx, x, p)
    values = np.unique(p)
    if values.size == 1:
        ctx.emit(nl.Smooth((x,), ctx.out_name(), fn="Pow", exponent=float(values[0])))
        return
    # one Pow per distinct exponent, each on all elements, then each element picks its own
    shape = ctx.logical_shape(x)
    full = np.broadcast_to(p, shape).reshape(-1)
    parts = [ctx.emit(nl.Smooth((x,), ctx.fresh(node.output[0] + f"_p{k}"), fn="Pow", exponent=float(v)))
             for k, v in enumerate(values)]
    flats = tuple(ctx.emit(ops.Reshape((q,), ctx.fresh(q + "_flat"), shape=(full.size,))) for q in parts)
    stacked = ctx.emit(ops.Concat(flats, ctx.fresh(node.output[0] + "_all"), axis=1))
    pick = np.searchsorted(values, full) * full.size + np.arange(full.size)
    ctx.emit(ops.Gather((stacked,), ctx.out_name(), indices=pick, shape=tuple(shape)))


@handles("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")
def _compare(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """A comparison of a computed tensor with a constant, as a 0/1 tensor."""
    a, b = node.input[0], node.input[1]
    kind = node.op_type
    if ctx.is_const(a) and ctx.is_var(b):  # c ⋈ x  ≡  x ⋈' c
        a, b = b, a
        kind = {"Greater": "Less", "Less": "Greater", "GreaterOrEqual": "LessOrEqual",
                "LessOrEqual": "GreaterOrEqual"}.get(kind, kind)
    if not ctx.is_const(b):
        raise ctx.unsupported(f"{node.op_type} of two computed tensors")
    x = ctx.var(a)
    c = ctx.per_sample_const(ctx.const(b), x)
    ctx.emit(nl.Compare((widened_by(ctx, x, c),), ctx.out_name(), cmp=kind, c=c))


@handles("Abs")
def _abs(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """``|x| = relu(x) + relu(−x)``: exact, from ops every analysis bounds."""
    pos, rneg = relu_parts(ctx, ctx.var(node.input[0]), node.output[0])
    ctx.emit(ops.Add((pos, rneg), ctx.out_name()))


@handles("Not")
def _not(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """``1 − b`` of a 0/1 tensor (exact)."""
    x = ctx.var(node.input[0])
    neg = ctx.emit(ops.MulConst((x,), ctx.fresh(node.output[0] + "_neg"), c=np.float64(-1.0)))
    ctx.emit(ops.AddConst((neg,), ctx.out_name(), c=np.float64(1.0)))


def cast_to_bool(ctx: LoadContext, x: str) -> None:
    """``Cast(x, BOOL)``: 1 where x ≠ 0 (called by the Cast handler)."""
    ctx.emit(nl.Compare((x,), ctx.out_name(), cmp="Equal", c=np.float64(0.0), negate=True))


@handles("Where")
def _where(ctx: LoadContext, node: onnx.NodeProto) -> None:
    c, a, b = node.input[:3]
    if ctx.is_const(c):
        raise ctx.unsupported("Where with a constant condition and computed branches")
    like = ctx.var(c)
    names = [operand(ctx, n, like) for n in (a, b)]
    shape = np.broadcast_shapes(*(ctx.logical_shape(n) for n in [like] + names))
    c_b, a_b, b_b = (broadcast_var(ctx, n, shape) for n in [like] + names)
    ctx.emit(nl.Select((c_b, a_b, b_b), ctx.out_name()))


@handles("Softmax")
def _softmax(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Softmax along one axis: moved last, computed, moved back (opsets ≥ 13; earlier opsets
    flatten from the axis, which is the same when the axis is the last)."""
    from vnncomp_qeb.io.onnx_shape_ops import onnx_shape

    x = ctx.var(node.input[0])
    shape = onnx_shape(ctx, x)
    rank = len(shape)
    axis = attr(node, "axis", -1 if _opset(ctx) >= 13 else 1)
    axis = axis + rank if axis < 0 else axis
    if _opset(ctx) < 13 and axis != rank - 1:
        raise ctx.unsupported("Softmax (opset < 13) over several axes")
    if not ctx.batchless and axis == 0:
        raise ctx.crosses_batch("Softmax along the batch axis")
    index = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    moved = np.moveaxis(index, axis, -1)
    per = (lambda a: a if ctx.batchless else a[0])
    src = ctx.emit(ops.Gather((x,), ctx.fresh(node.output[0] + "_last"), indices=per(moved).reshape(-1),
                              shape=tuple(per(moved).shape)))
    y = ctx.emit(nl.Softmax((src,), ctx.fresh(node.output[0] + "_soft")))
    back = np.argsort(per(moved).reshape(-1))  # the inverse permutation
    ctx.emit(ops.Gather((y,), ctx.out_name(), indices=back, shape=tuple(per(index).shape)))


def _opset(ctx: LoadContext) -> int:
    return ctx.opset


def product(ctx: LoadContext, node: onnx.NodeProto, x: str, y: str) -> None:
    """``x·y`` or ``x/y`` of two computed tensors (called by the arithmetic handler)."""
    if x == y and node.op_type == "Mul":  # a square: convex, never negative
        ctx.emit(nl.Smooth((x,), ctx.out_name(), fn="Pow", exponent=2.0))
        return
    a, b = broadcast_vars(ctx, x, y)
    if node.op_type == "Div":
        b = ctx.emit(nl.Smooth((b,), ctx.fresh(node.output[0] + "_recip"), fn="Reciprocal"))
    ctx.emit(nl.Product((a, b), ctx.out_name()))
