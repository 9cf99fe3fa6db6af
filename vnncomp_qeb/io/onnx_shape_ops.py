"""Handlers for ONNX operators that only move, copy or sum elements: Transpose, Slice, Split,
Gather, Expand, Tile, Squeeze, Unsqueeze, DepthToSpace, SpaceToDepth (index tracking), ReduceSum,
ReduceMean (a sparse 0/1 map), Neg, Shape and ConstantOfShape (constants).

A data-movement op is translated by running onnx's reference implementation of the node on a
tensor of element *indices*: where each output element comes from is then read off its value,
and the op becomes one :class:`~vnncomp_qeb.ir.ops.Gather`, which every analysis already bounds
exactly. Adding such an op is one name in :data:`MOVERS`."""

from __future__ import annotations

import numpy as np
import onnx
import scipy.sparse as sp

from vnncomp_qeb.errors import UnsupportedOperator
from vnncomp_qeb.io.onnx_context import LoadContext, attr, handles
from vnncomp_qeb.ir import ops

MOVERS = ("Transpose", "Slice", "Split", "Gather", "Expand", "Tile", "Squeeze", "Unsqueeze",
          "DepthToSpace", "SpaceToDepth", "GatherElements", "GatherND", "ReverseSequence")


def onnx_shape(ctx: LoadContext, x: str) -> tuple[int, ...]:
    """The ONNX shape of variable ``x`` with its batch axis of one (none for batchless models)."""
    shape = tuple(ctx.logical_shape(x))
    return shape if ctx.batchless else (1,) + shape


def _run_on(ctx: LoadContext, node: onnx.NodeProto, values: np.ndarray,
            consts: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """The node's outputs when its first input holds ``values`` (the others are constants, or
    the values in ``consts``)."""
    from onnx.reference import ReferenceEvaluator

    feeds = {node.input[0]: values}
    for name in node.input[1:]:
        if name:
            feeds[name] = consts[name] if consts and name in consts else ctx.const(name)
    try:
        return [np.asarray(v) for v in ReferenceEvaluator(node).run(None, feeds)]
    except Exception as exc:
        raise ctx.unsupported(f"cannot evaluate its index map ({type(exc).__name__}: {exc})") from exc


def _index_maps(ctx: LoadContext, node: onnx.NodeProto, offset: int = 0,
                consts: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Per output, the per-sample array of the input elements (numbered from ``offset``) each of
    its elements is; values below ``offset`` are what the op inserts (a pad)."""
    for name in node.input[1:]:
        if name and name not in (consts or {}) and not ctx.is_const(name):
            raise ctx.unsupported(f"input '{name}' must be a constant (a computed index or shape)")
    x = ctx.var(node.input[0])
    shape = onnx_shape(ctx, x)
    n = int(np.prod(shape, dtype=np.int64))
    index = np.arange(offset, n + offset, dtype=np.int64).reshape(shape)
    outs = _run_on(ctx, node, index, consts)
    if not ctx.batchless:
        # the op must act on each sample alone: with two samples, the second's indices are the
        # first's shifted by one sample
        try:
            twice = _run_on(ctx, node, np.concatenate([index, index + n]), consts)
        except UnsupportedOperator:  # its constants fit one sample only (GatherElements' indices)
            raise ctx.crosses_batch("defined for a batch of one only") from None
        if any(t.shape[0] != 2 or o.shape[0] != 1 or not np.array_equal(t[0], o[0])
               or not np.array_equal(t[1], np.where(o[0] >= offset, o[0] + n, o[0])) for o, t in zip(outs, twice)):
            raise ctx.crosses_batch("moves elements across the batch axis")
        outs = [o[0] for o in outs]
    return outs


def _tag(ctx: LoadContext, name: str):
    tag = ctx.tags.get(name)
    if tag is not None and np.size(tag.scale) > 1:
        raise ctx.unsupported("moves elements of a per-axis quantized tensor")
    return tag


@handles(*MOVERS)
def _mover(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Each output element is some element of the first input: a Gather of those indices."""
    x = ctx.var(node.input[0])
    outs = _index_maps(ctx, node)
    tag = _tag(ctx, node.input[0])
    for k, (out_name, picked) in enumerate(zip(node.output, outs)):
        if not out_name:
            continue
        ctx.emit(ops.Gather((x,), out_name, indices=picked.reshape(-1).astype(np.int64), shape=tuple(picked.shape)), tag=tag)


@handles("Pad")
def _pad(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Reflect/edge/wrap pads copy elements (index tracking); a constant pad reads one extra
    element holding the pad value."""
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = attr(node, "pads") if ctx.opset < 11 else [int(v) for v in np.asarray(ctx.const(node.input[1])).reshape(-1)]
    value = attr(node, "value", 0.0) if ctx.opset < 11 else (
        float(np.asarray(ctx.const(node.input[2])).reshape(-1)[0]) if len(node.input) > 2 and node.input[2] else 0.0)
    inputs = ["data", "pads", "value"] + (["axes"] if len(node.input) > 3 and node.input[3] else [])
    probe = onnx.helper.make_node("Pad", inputs, ["y"], mode=mode)
    consts = {"pads": np.array(pads, dtype=np.int64), "value": np.array(0, dtype=np.int64)}
    if "axes" in inputs:
        consts["axes"] = np.asarray(ctx.const(node.input[3]), dtype=np.int64)
    x = ctx.var(node.input[0])
    probe.input[0] = node.input[0]
    (picked,) = _index_maps(ctx, probe, offset=1, consts=consts)
    tag = _tag(ctx, node.input[0])
    n = int(np.prod(ctx.logical_shape(x), dtype=np.int64))
    if not np.any(picked == 0):
        ctx.emit(ops.Gather((x,), ctx.out_name(), indices=(picked - 1).reshape(-1), shape=tuple(picked.shape)), tag=tag)
        return
    from vnncomp_qeb.io.onnx_float_ops import constant_tensor

    real = value if tag is None else float(tag.scale) * (value - float(tag.zero_point))  # a code, for integers
    flat = ctx.emit(ops.Reshape((x,), ctx.fresh(node.output[0] + "_flat"), shape=(n,)))
    pad = constant_tensor(ctx, np.array([real]), node.output[0] + "_value")
    both = ctx.emit(ops.Concat((flat, pad), ctx.fresh(node.output[0] + "_src"), axis=1))
    index = np.where(picked == 0, n, picked - 1).reshape(-1)
    ctx.emit(ops.Gather((both,), ctx.out_name(), indices=index, shape=tuple(picked.shape)), tag=tag)


def _axes(ctx: LoadContext, node: onnx.NodeProto, rank: int) -> list[int] | None:
    """The reduced axes (normalised, of the ONNX tensor), or None for the identity."""
    axes = attr(node, "axes")
    if len(node.input) > 1 and node.input[1]:
        axes = [int(a) for a in np.asarray(ctx.const(node.input[1])).reshape(-1)]
    if not axes:
        return None if attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted({a + rank if a < 0 else a for a in axes})


@handles("ReduceSum", "ReduceMean")
def _reduce(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """A sum (or mean) over axes: a sparse map with one 1 (or 1/k) per summed element."""
    x = ctx.var(node.input[0])
    shape = onnx_shape(ctx, x)
    axes = _axes(ctx, node, len(shape))
    if axes is None:
        ctx.bind(node.output[0], x)
        return
    if not ctx.batchless and 0 in axes:
        raise ctx.crosses_batch("reduces over the batch axis")
    keep = [a for a in range(len(shape)) if a not in axes]
    index = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    rows = np.transpose(index, keep + axes).reshape(int(np.prod([shape[a] for a in keep], dtype=np.int64)), -1)
    m, k = rows.shape
    weight = 1.0 if node.op_type == "ReduceSum" else 1.0 / k
    W = sp.csc_matrix((np.full(m * k, weight), (rows.reshape(-1), np.repeat(np.arange(m), k))),
                      shape=(index.size, m))
    out_shape = [1 if a in axes else shape[a] for a in range(len(shape))] if attr(node, "keepdims", 1) \
        else [shape[a] for a in keep]
    per_sample = tuple(out_shape if ctx.batchless else out_shape[1:])
    # a mean divides the sum once more (one rounding); 1/k itself is not exact in float64
    flat = ctx.emit(ops.Affine((x,), ctx.fresh(node.output[0] + "_sum"), W=W,
                               extra_steps=0 if node.op_type == "ReduceSum" else 1,
                               slack=0.0 if node.op_type == "ReduceSum" else 2.0 ** -52))
    ctx.emit(ops.Reshape((flat,), ctx.out_name(), shape=per_sample))


@handles("Neg")
def _neg(ctx: LoadContext, node: onnx.NodeProto) -> None:
    ctx.emit(ops.MulConst((ctx.var(node.input[0]),), ctx.out_name(), c=np.float64(-1.0)))


@handles("Shape")
def _shape(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Shapes are static: the shape of a variable tensor is a constant."""
    shape = np.array(onnx_shape(ctx, ctx.var(node.input[0])), dtype=np.int64)
    start, end = attr(node, "start", 0), attr(node, "end")
    ctx.constants[node.output[0]] = shape[start:end]
