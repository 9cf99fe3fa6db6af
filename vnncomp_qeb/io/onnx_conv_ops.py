"""Handlers for convolutional ONNX operators: Conv, AveragePool, GlobalAveragePool and
BatchNormalization (inference). Each linear map becomes an :class:`~vnncomp_qeb.ir.ops.Affine`
with a sparse patch-form matrix (:mod:`vnncomp_qeb.ir.patches`); its output is held flat in the
IR, with its ONNX (C, H, W) shape recorded for the ops that follow."""

from __future__ import annotations

import numpy as np
import onnx

from vnncomp_qeb.io.onnx_context import LoadContext, attr, handles
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.patches import average_pool_matrix, conv_matrix, same_pads


def _image(ctx: LoadContext, name: str) -> tuple[str, tuple[int, int, int]]:
    x = ctx.var(name)
    shape = ctx.logical_shape(x)
    if len(shape) != 3:
        raise ctx.unsupported(f"expects a (C, H, W) input per sample (2-D), got shape {list(shape)}")
    return x, tuple(int(d) for d in shape)


def _geometry(ctx: LoadContext, node: onnx.NodeProto, hw: tuple[int, int], kernel: tuple[int, int]):
    """(strides, pads (top, left, bottom, right), dilations) with auto_pad resolved."""
    strides = tuple(attr(node, "strides", [1, 1]))
    dilations = tuple(attr(node, "dilations", [1, 1]))
    pads = tuple(attr(node, "pads", [0, 0, 0, 0]))
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise ctx.unsupported("only 2-D strides, dilations and pads are modelled")
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "VALID":
        pads = (0, 0, 0, 0)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        (t, b), (l, r) = (same_pads(hw[i], kernel[i], strides[i], dilations[i], auto == "SAME_UPPER") for i in (0, 1))
        pads = (t, l, b, r)
    elif auto != "NOTSET":
        raise ctx.unsupported(f"auto_pad {auto}")
    return strides, pads, dilations


def _emit_linear(ctx: LoadContext, x: str, M, out_shape, bias=None) -> None:
    out = ctx.emit(ops.Affine((x,), ctx.out_name(), W=M, b=bias))
    ctx.logical[out] = tuple(int(d) for d in out_shape)


@handles("Conv")
def _conv(ctx: LoadContext, node: onnx.NodeProto) -> None:
    x, shape = _image(ctx, node.input[0])
    if ctx.is_var(node.input[1]):
        raise ctx.unsupported("Conv with a computed (non-constant) kernel")
    K = ctx.const_f64(node.input[1])
    if K.ndim != 4:
        raise ctx.unsupported(f"Conv kernel of rank {K.ndim} (only 2-D convolutions are modelled)")
    strides, pads, dilations = _geometry(ctx, node, shape[1:], K.shape[2:])
    try:
        M, out_shape = conv_matrix(K, shape, strides, pads, dilations, attr(node, "group", 1))
    except ValueError as exc:
        raise ctx.unsupported(str(exc)) from None
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = np.repeat(ctx.const_f64(node.input[2]).reshape(-1), out_shape[1] * out_shape[2])
    _emit_linear(ctx, x, M, out_shape, bias)


@handles("AveragePool")
def _average_pool(ctx: LoadContext, node: onnx.NodeProto) -> None:
    x, shape = _image(ctx, node.input[0])
    kernel = tuple(attr(node, "kernel_shape"))
    if attr(node, "ceil_mode", 0):
        raise ctx.unsupported("AveragePool with ceil_mode=1")
    strides, pads, dilations = _geometry(ctx, node, shape[1:], kernel)
    if dilations != (1, 1):
        raise ctx.unsupported("AveragePool with dilations")
    M, out_shape = average_pool_matrix(shape, kernel, strides, pads, bool(attr(node, "count_include_pad", 0)))
    _emit_linear(ctx, x, M, out_shape)


@handles("GlobalAveragePool")
def _global_average_pool(ctx: LoadContext, node: onnx.NodeProto) -> None:
    x, shape = _image(ctx, node.input[0])
    M, out_shape = average_pool_matrix(shape, shape[1:])
    _emit_linear(ctx, x, M, out_shape)


@handles("BatchNormalization")
def _batch_norm(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Inference form: ``scale·(x − mean)/sqrt(var + eps) + B`` per channel (axis 1)."""
    if attr(node, "training_mode", 0):
        raise ctx.unsupported("BatchNormalization in training mode")
    x = ctx.var(node.input[0])
    scale, bias, mean, var = (ctx.const_f64(n) for n in node.input[1:5])
    k = scale / np.sqrt(var + attr(node, "epsilon", 1e-5))
    mul = ctx.emit(ops.MulConst((x,), ctx.out_name(0, "_scaled"), c=ctx.per_axis(k, 1, x)))
    ctx.emit(ops.AddConst((mul,), ctx.out_name(), c=ctx.per_axis(bias - mean * k, 1, x)))
