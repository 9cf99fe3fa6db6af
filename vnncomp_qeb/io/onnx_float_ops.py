"""Handlers for the standard (non-quantized) ONNX operators."""

from __future__ import annotations

import numpy as np
import onnx

from vnncomp_qeb.io.onnx_context import FLOAT_TYPES, INT_RANGES, PRECISION_OF, LoadContext, QTag, attr, handles
from vnncomp_qeb.ir import ops


@handles("Identity")
def _identity(ctx: LoadContext, node: onnx.NodeProto) -> None:
    ctx.bind(node.output[0], ctx.var(node.input[0]))
    if node.input[0] in ctx.tags:
        ctx.tags[node.output[0]] = ctx.tags[node.input[0]]


@handles("MatMul")
def _matmul(ctx: LoadContext, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    if ctx.is_const(a):
        raise ctx.unsupported("MatMul with a constant left operand and a variable right operand")
    W = ctx.const_f64(b)
    if W.ndim != 2:
        raise ctx.unsupported(f"MatMul weight of rank {W.ndim} (only 2-D weights are modelled)")
    ctx.emit(ops.Affine((ctx.var(a),), ctx.out_name(), W=W))


@handles("Gemm")
def _gemm(ctx: LoadContext, node: onnx.NodeProto) -> None:
    if attr(node, "transA", 0):
        raise ctx.unsupported("Gemm with transA=1")
    a = ctx.var(node.input[0])
    W = ctx.const_f64(node.input[1])
    if attr(node, "transB", 0):
        W = W.T
    W = attr(node, "alpha", 1.0) * W
    b = None
    if len(node.input) > 2 and node.input[2]:
        b = attr(node, "beta", 1.0) * np.broadcast_to(ctx.const_f64(node.input[2]), (1, W.shape[1]))[0]
    ctx.emit(ops.Affine((a,), ctx.out_name(), W=np.ascontiguousarray(W), b=b))


@handles("Add", "Sub", "Mul", "Div")
def _binary(ctx: LoadContext, node: onnx.NodeProto) -> None:
    kind = node.op_type
    x, y = node.input[0], node.input[1]
    out = ctx.out_name()
    if ctx.is_var(x) and ctx.is_var(y):
        if kind in ("Add", "Sub"):
            a, b = broadcast_vars(ctx, ctx.var(x), ctx.var(y))
            ctx.emit((ops.Add if kind == "Add" else ops.Sub)((a, b), out))
        else:
            from vnncomp_qeb.io.onnx_nonlinear_ops import product

            product(ctx, node, ctx.var(x), ctx.var(y))
        return
    if ctx.is_var(x):
        c = ctx.per_sample_const(ctx.const(y), x)
        v = widened_by(ctx, x, c)
        if kind == "Add":
            ctx.emit(ops.AddConst((v,), out, c=c))
        elif kind == "Sub":
            ctx.emit(ops.AddConst((v,), out, c=-c))
        else:
            ctx.emit(ops.MulConst((v,), out, c=c, divide=(kind == "Div")))
        return
    c = ctx.per_sample_const(ctx.const(x), y)
    v = widened_by(ctx, y, c)
    if kind == "Add":
        ctx.emit(ops.AddConst((v,), out, c=c))
    elif kind == "Mul":
        ctx.emit(ops.MulConst((v,), out, c=c))
    elif kind == "Sub":
        neg = ctx.emit(ops.MulConst((v,), ctx.out_name(0, "_neg"), c=np.float64(-1.0)))
        ctx.emit(ops.AddConst((neg,), out, c=c))
    else:
        raise ctx.unsupported("Div of a constant by a variable tensor")


@handles("Sum", "Mean")
def _sum(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Elementwise sum (mean: then divided by the count) of tensors, added in order."""
    names = [n for n in node.input if n]
    first = next((n for n in names if ctx.is_var(n)), None)
    if first is None:
        raise ctx.unsupported(f"{node.op_type} of constants only")
    first = ctx.var(first)
    terms = [operand(ctx, n, first) for n in names]
    out = node.output[0]
    cur = terms[0]
    for k, t in enumerate(terms[1:]):
        a, b = broadcast_vars(ctx, cur, t)
        last = k == len(terms) - 2 and node.op_type == "Sum"
        cur = ctx.emit(ops.Add((a, b), out if last else ctx.fresh(out + f"_sum{k}")))
    if node.op_type == "Mean" and len(terms) > 1:
        ctx.emit(ops.MulConst((cur,), ctx.out_name(), c=np.float64(len(terms)), divide=True))
    elif len(terms) == 1:
        ctx.bind(out, cur)


@handles("Relu")
def _relu(ctx, node):
    ctx.emit(ops.Relu((ctx.var(node.input[0]),), ctx.out_name()))


@handles("Clip")
def _clip(ctx, node):
    lo, hi = attr(node, "min", -np.inf), attr(node, "max", np.inf)  # opset < 11
    if len(node.input) > 1 and node.input[1]:
        lo = float(ctx.const(node.input[1]))
    if len(node.input) > 2 and node.input[2]:
        hi = float(ctx.const(node.input[2]))
    if lo == -np.inf and hi == np.inf:  # the identity (twins use it to keep a float16 rounding)
        ctx.bind(node.output[0], ctx.var(node.input[0]))
        return
    ctx.emit(ops.Clip((ctx.var(node.input[0]),), ctx.out_name(), lo=float(lo), hi=float(hi)))


@handles("Max", "Min")
def _max_min(ctx, node):
    """``Max(x, c)`` / ``Min(x, c)`` with a scalar constant: a one-sided clamp (how exporters write
    ``clip``, e.g. ``Min(Max(x, 0), 255)``); of several tensors (or tensor constants): pairwise
    ``m + relu(b − m)`` (``m − relu(m − b)`` for Min), exact in reals."""
    names = [n for n in node.input if n]
    consts = [n for n in names if ctx.is_const(n)]
    variables = [n for n in names if not ctx.is_const(n)]
    values = [np.asarray(ctx.const(n), dtype=np.float64) for n in consts]
    if len(variables) > 1 or any(v.size != 1 for v in values):
        _pairwise_extreme(ctx, node, variables, consts)
        return
    x = ctx.var(variables[0])
    if not values:  # Max/Min of one tensor: itself
        ctx.bind(node.output[0], x)
        return
    bound = max(float(v) for v in values) if node.op_type == "Max" else min(float(v) for v in values)
    lo, hi = (bound, np.inf) if node.op_type == "Max" else (-np.inf, bound)
    ctx.emit(ops.Clip((x,), ctx.out_name(), lo=lo, hi=hi))


def _pairwise_extreme(ctx: LoadContext, node, variables: list[str], consts: list[str]) -> None:
    if not variables:
        raise ctx.unsupported(f"{node.op_type} of constants only")
    first = ctx.var(variables[0])
    names = [operand(ctx, n, first) for n in variables + consts]
    m = names[0]
    out = node.output[0]
    for k, b in enumerate(names[1:]):
        last = k == len(names) - 2
        a, b = broadcast_vars(ctx, m, b)
        gap = ctx.emit(ops.Sub((b, a) if node.op_type == "Max" else (a, b), ctx.fresh(out + f"_gap{k}")))
        step = ctx.emit(ops.Relu((gap,), ctx.fresh(out + f"_step{k}")))
        kind = ops.Add if node.op_type == "Max" else ops.Sub
        m = ctx.emit(kind((a, step), out if last else ctx.fresh(out + f"_m{k}")))
    if len(names) == 1:
        ctx.bind(out, m)


@handles("LeakyRelu", "PRelu")
def _leaky_relu(ctx, node):
    """``relu(x) − α·relu(−x)`` (α a constant, per channel for PRelu): exact in reals."""
    x = ctx.var(node.input[0])
    alpha = attr(node, "alpha", 0.01) if node.op_type == "LeakyRelu" else ctx.per_sample_const(ctx.const(node.input[1]), x)
    out = node.output[0]
    pos, rneg = relu_parts(ctx, x, out)
    scaled = ctx.emit(ops.MulConst((rneg,), ctx.fresh(out + "_scaled"), c=np.asarray(alpha, dtype=np.float64)))
    ctx.emit(ops.Sub((pos, scaled), ctx.out_name()))


@handles("HardSigmoid")
def _hard_sigmoid(ctx, node):
    """``clip(α·x + β, 0, 1)``."""
    x = ctx.var(node.input[0])
    out = node.output[0]
    scaled = ctx.emit(ops.MulConst((x,), ctx.fresh(out + "_scaled"), c=np.float64(attr(node, "alpha", 0.2))))
    shifted = ctx.emit(ops.AddConst((scaled,), ctx.fresh(out + "_shifted"), c=np.float64(attr(node, "beta", 0.5))))
    ctx.emit(ops.Clip((shifted,), ctx.out_name(), lo=0.0, hi=1.0))


@handles("Round", "Floor", "Ceil")
def _round(ctx, node):
    mode = {"Round": "half_even", "Floor": "floor", "Ceil": "ceil"}[node.op_type]
    ctx.emit(ops.Round((ctx.var(node.input[0]),), ctx.out_name(), mode=mode))


@handles("Flatten")
def _flatten(ctx, node):
    x = ctx.var(node.input[0])
    shape = ctx.logical_shape(x)
    axis = attr(node, "axis", 1)
    if ctx.batchless:  # (d0 … d_{axis-1}, d_axis …) → two axes, both per sample
        axis = axis + len(shape) if axis < 0 else axis
        out = (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))
        ctx.emit(ops.Reshape((x,), ctx.out_name(), shape=out), tag=ctx.tags.get(node.input[0]))
        return
    axis = axis + len(shape) + 1 if axis < 0 else axis
    if axis == 0 or int(np.prod(shape[: axis - 1], dtype=np.int64)) != 1:
        raise ctx.crosses_batch(f"Flatten with axis={axis} would merge the batch axis")
    if len(ctx.shape(x)) == 1:  # held flat already (a convolution's output): nothing to do
        ctx.bind(node.output[0], x)
        if node.input[0] in ctx.tags:  # an integer tensor stays one
            ctx.tags[node.output[0]] = ctx.tags[node.input[0]]
        return
    ctx.emit(ops.Reshape((x,), ctx.out_name(), shape=(int(np.prod(shape, dtype=np.int64)),)),
             tag=ctx.tags.get(node.input[0]))


@handles("Reshape")
def _reshape(ctx, node):
    x = ctx.var(node.input[0])
    shape = ctx.logical_shape(x)
    target = [int(t) for t in ctx.const(node.input[1]).reshape(-1)]
    if ctx.batchless:  # the model has no batch axis: the target is the whole shape
        rest = [shape[i] if t == 0 and i < len(shape) else t for i, t in enumerate(target)]
    else:
        if not target or target[0] not in (1, -1, 0):
            raise ctx.crosses_batch(f"Reshape to {target}: the first axis must stay the batch axis")
        rest = [shape[i] if t == 0 and i < len(shape) else t for i, t in enumerate(target[1:])]
    if rest.count(-1) == 1:
        known = int(np.prod([t for t in rest if t != -1], dtype=np.int64))
        rest[rest.index(-1)] = int(np.prod(shape, dtype=np.int64)) // max(known, 1)
    if int(np.prod(rest, dtype=np.int64)) != int(np.prod(shape, dtype=np.int64)):
        raise ctx.unsupported(f"Reshape of per-sample shape {list(shape)} to {target}")
    ctx.emit(ops.Reshape((x,), ctx.out_name(), shape=tuple(rest)))


@handles("Concat")
def _concat(ctx, node):
    first_var = next((n for n in node.input if ctx.is_var(n)), None)
    if first_var is None:
        raise ctx.unsupported("Concat of constants only")
    names = [operand(ctx, n, first_var) for n in node.input]
    rank = len(ctx.logical_shape(names[0])) + (0 if ctx.batchless else 1)
    axis = attr(node, "axis")
    axis = (axis + rank if axis < 0 else axis) + (1 if ctx.batchless else 0)  # the IR's axis 0 is the batch
    if axis == 0:
        raise ctx.crosses_batch("Concat along the batch axis")
    if any(n in ctx.logical for n in names) and axis != 1:  # flat (C, H, W): channels only
        raise ctx.unsupported(f"Concat of convolution outputs along axis {axis} (only channels, axis 1)")
    ctx.emit(ops.Concat(tuple(names), ctx.out_name(), axis=axis))


@handles("Cast")
def _cast(ctx, node):
    x = ctx.var(node.input[0])
    to = attr(node, "to")
    tag = ctx.tags.get(node.input[0])
    if to in FLOAT_TYPES:
        if tag is None:
            cast_float(ctx, x, PRECISION_OF[to], node.output[0], ctx.types.get(node.input[0]))
            return
        # integer code q = r/s + z of a quantized tensor becomes a float value
        ctx.bind(node.output[0], integer_code(ctx, x, tag, node.output[0]))
        return
    if to == onnx.TensorProto.BOOL:
        from vnncomp_qeb.io.onnx_nonlinear_ops import cast_to_bool

        cast_to_bool(ctx, x)
        return
    if to not in INT_RANGES:
        raise ctx.unsupported(f"Cast to data type {to}")
    lo, hi = INT_RANGES[to]
    if tag is not None:  # integer → integer: same value, new range
        ctx.tags[node.output[0]] = QTag(tag.scale, tag.zero_point, float(lo), float(hi))
        ctx.bind(node.output[0], x)
        return
    # float → int truncates toward zero (out-of-range values are undefined in ONNX)
    ctx.emit(ops.Round((x,), ctx.out_name(), mode="toward_zero"),
             tag=QTag(np.float64(1.0), np.float64(0.0), float(lo), float(hi)))


def broadcast_vars(ctx: LoadContext, a: str, b: str) -> tuple[str, str]:
    """Two variable tensors brought to their common (ONNX-broadcast) shape: the elementwise ops
    then see equal shapes."""
    sa, sb = ctx.logical_shape(a), ctx.logical_shape(b)
    if sa == sb:
        return a, b
    try:
        common = np.broadcast_shapes(sa, sb)
    except ValueError:
        raise ctx.unsupported(f"shapes {list(sa)} and {list(sb)} do not broadcast") from None
    return broadcast_var(ctx, a, common), broadcast_var(ctx, b, common)


def broadcast_var(ctx: LoadContext, name: str, shape: tuple[int, ...]) -> str:
    """``name`` broadcast to ``shape`` by a Gather that repeats its elements (itself when it has
    that shape already)."""
    own = ctx.logical_shape(name)
    if tuple(own) == tuple(shape):
        return name
    picked = np.broadcast_to(np.arange(int(np.prod(own, dtype=np.int64))).reshape(own), shape)
    return ctx.emit(ops.Gather((name,), ctx.fresh(name + "_bcast"), indices=picked.reshape(-1), shape=tuple(shape)))


def widened_by(ctx: LoadContext, x: str, c: np.ndarray) -> str:
    """``x`` broadcast first where an elementwise constant would enlarge it (the IR's
    elementwise ops keep their input's shape)."""
    if ctx.var(x) in ctx.logical:  # held flat: per_sample_const already broadcast c to its ONNX shape
        return ctx.var(x)
    try:
        shape = np.broadcast_shapes(ctx.logical_shape(x), np.shape(c))
    except ValueError:
        raise ctx.unsupported(f"a constant of shape {list(np.shape(c))} does not broadcast to "
                              f"{list(ctx.logical_shape(x))}") from None
    return broadcast_var(ctx, ctx.var(x), shape)


def operand(ctx: LoadContext, name: str, like: str) -> str:
    """An input of an op that takes constants and variables alike: the variable, or the constant
    (against the per-sample shape of ``like``) as a variable tensor."""
    return ctx.var(name) if ctx.is_var(name) else constant_tensor(ctx, ctx.per_sample_const(ctx.const(name), like), name)


def relu_parts(ctx: LoadContext, x: str, out: str) -> tuple[str, str]:
    """``relu(x)`` and ``relu(−x)`` (exact), for ops written as their combination."""
    neg = ctx.emit(ops.MulConst((x,), ctx.fresh(out + "_neg"), c=np.float64(-1.0)))
    pos = ctx.emit(ops.Relu((x,), ctx.fresh(out + "_pos")))
    return pos, ctx.emit(ops.Relu((neg,), ctx.fresh(out + "_rneg")))


def constant_tensor(ctx: LoadContext, c: np.ndarray, name: str) -> str:
    """A variable IR tensor that always holds the constant ``c`` (per sample): ``0·x + c`` over
    elements of the input, exact (float64) — for ops that take constants and variables alike."""
    c = np.asarray(c, dtype=np.float64)
    src = ctx.fresh(name + "_src")
    ctx.emit(ops.Gather((ctx.input_name,), src, indices=np.zeros(max(c.size, 1), dtype=np.int64), shape=c.shape))
    saved, ctx.precision = ctx.precision, "float64"
    try:
        zero = ctx.emit(ops.MulConst((src,), ctx.fresh(name + "_zero"), c=np.float64(0.0)))
        return ctx.emit(ops.AddConst((zero,), ctx.fresh(name + "_const"), c=c))
    finally:
        ctx.precision = saved


def cast_float(ctx: LoadContext, x: str, target: str, out: str, from_type: int | None = None) -> str:
    """Bind ``out`` to ``x`` cast to the float type ``target``: the same tensor when the cast
    widens (exact), else a :class:`~vnncomp_qeb.ir.ops.CastFloat` that rounds (an unknown source
    type counts as wider: rounding an already representable value changes nothing)."""
    source = PRECISION_OF.get(from_type, "float64")
    if ops.PRECISIONS.index(target) <= ops.PRECISIONS.index(source):
        ctx.bind(out, x)
        return x
    saved, ctx.precision = ctx.precision, target
    try:
        own = ctx.node is not None and out in ctx.node.output  # a Cast node's output keeps its name
        name = ctx.emit(ops.CastFloat((x,), out if own else ctx.fresh(out),
                                      source=ctx.where() or f"cast of {out} to {target}"))
    finally:
        ctx.precision = saved
    ctx.bind(out, name)
    return name


def integer_code(ctx: LoadContext, x: str, tag: QTag, out: str) -> str:
    """Emit ops turning the real value ``r`` of tagged tensor ``x`` into its code ``r/s + z``."""
    cur = x
    if not np.all(tag.scale == 1.0):
        cur = ctx.emit(ops.MulConst((cur,), ctx.fresh(out + "_descale"), c=tag.scale, divide=True))
    if np.any(tag.zero_point != 0.0):
        cur = ctx.emit(ops.AddConst((cur,), ctx.fresh(out + "_zp"), c=tag.zero_point))
    return cur
