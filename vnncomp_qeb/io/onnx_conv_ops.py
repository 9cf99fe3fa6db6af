"""Handlers for convolutional ONNX operators: Conv, AveragePool, GlobalAveragePool, MaxPool and
BatchNormalization (inference). Each linear map becomes an :class:`~vnncomp_qeb.ir.ops.Affine`
with a sparse patch-form matrix (:mod:`vnncomp_qeb.ir.patches`); its output is held flat in the
IR, with its ONNX (C, H, W) shape recorded for the ops that follow."""

from __future__ import annotations

import numpy as np
import onnx

from vnncomp_qeb import numerics
from vnncomp_qeb.io.onnx_context import LoadContext, attr, handles
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.patches import average_pool_matrix, conv_matrix, pool_windows, same_pads, selection


def _image(ctx: LoadContext, name: str) -> tuple[str, tuple[int, int, int]]:
    """The variable and its (C, H, W) shape; a 1-D (C, L) input is taken as (C, 1, L)."""
    x = ctx.var(name)
    shape = ctx.logical_shape(x)
    if ctx.batchless:  # onnxruntime would read the first axis as the batch
        raise ctx.unsupported("convolution or pooling in a model without a batch axis")
    if len(shape) == 2:
        shape = (shape[0], 1, shape[1])
    if len(shape) != 3:
        raise ctx.unsupported(f"expects a (C, H, W) or (C, L) input per sample, got shape {list(shape)}")
    return x, tuple(int(d) for d in shape)


def _one_d(ctx: LoadContext, name: str) -> bool:
    return len(ctx.logical_shape(name)) == 2


def _geometry(ctx: LoadContext, node: onnx.NodeProto, hw: tuple[int, int], kernel: tuple[int, int],
              one_d: bool = False):
    """(strides, pads (top, left, bottom, right), dilations) with auto_pad resolved; 1-D
    attributes are lifted to a height of one."""
    strides = tuple(attr(node, "strides", [1] if one_d else [1, 1]))
    dilations = tuple(attr(node, "dilations", [1] if one_d else [1, 1]))
    pads = tuple(attr(node, "pads", [0, 0] if one_d else [0, 0, 0, 0]))
    if one_d and len(strides) == 1 and len(dilations) == 1 and len(pads) == 2:
        strides, dilations, pads = (1,) + strides, (1,) + dilations, (0, pads[0], 0, pads[1])
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise ctx.unsupported("only 1-D and 2-D strides, dilations and pads are modelled")
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
    ctx.logical[out] = _out_shape(ctx, x, out_shape)


def _out_shape(ctx: LoadContext, x: str, out_shape) -> tuple[int, ...]:
    """The ONNX shape of the output: (C, H, W), or (C, L) for a 1-D input."""
    shape = tuple(int(d) for d in out_shape)
    return (shape[0], shape[2]) if _one_d(ctx, x) else shape


def _conv_map(ctx: LoadContext, node: onnx.NodeProto, shape: tuple[int, int, int], K: np.ndarray,
              one_d: bool = False):
    """The node's convolution with real kernel ``K`` as a patch-form matrix, and its output shape."""
    if K.ndim == 3:  # 1-D: a kernel of height one
        K = K[:, :, None, :]
    if K.ndim != 4:
        raise ctx.unsupported(f"Conv kernel of rank {K.ndim} (1-D and 2-D convolutions are modelled)")
    strides, pads, dilations = _geometry(ctx, node, shape[1:], K.shape[2:], one_d)
    try:
        return conv_matrix(K, shape, strides, pads, dilations, attr(node, "group", 1))
    except ValueError as exc:
        raise ctx.unsupported(str(exc)) from None


@handles("Conv")
def _conv(ctx: LoadContext, node: onnx.NodeProto) -> None:
    x, shape = _image(ctx, node.input[0])
    if ctx.is_var(node.input[1]):
        raise ctx.unsupported("Conv with a computed (non-constant) kernel")
    M, out_shape = _conv_map(ctx, node, shape, ctx.const_f64(node.input[1]), _one_d(ctx, x))
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = np.repeat(ctx.const_f64(node.input[2]).reshape(-1), out_shape[1] * out_shape[2])
    _emit_linear(ctx, x, M, out_shape, bias)


@handles("QLinearConv")
def _qlinear_conv(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """The integer convolution on real values: the dequantized input, kernel ``s_w·(w − z_w)`` (per
    output channel), bias ``s_x·s_w·B``, then the output's quantization."""
    from vnncomp_qeb.io.onnx_quant_ops import _optional, _real_operand, _zero_point, dequantize_const, fake_quant

    a, _ = _real_operand(ctx, node, 0)
    if a is None or not ctx.is_const(node.input[3]):
        raise ctx.unsupported("QLinearConv of a constant input or with a computed kernel")
    _, shape = _image(ctx, a)
    w_scale = np.asarray(ctx.const(node.input[4]), dtype=np.float64)
    w_zp, _ = _zero_point(ctx, _optional(node, 5))
    K = dequantize_const(ctx.const(node.input[3]), w_scale, w_zp, axis=0)
    M, out_shape = _conv_map(ctx, node, shape, K, _one_d(ctx, a))
    bias = None
    if _optional(node, 8):
        x_scale = np.asarray(ctx.const(node.input[1]), dtype=np.float64)
        per_channel = np.broadcast_to(np.asarray(ctx.const(node.input[8]), dtype=np.float64) * x_scale * w_scale,
                                      (out_shape[0],))
        bias = np.repeat(per_channel, out_shape[1] * out_shape[2])
    acc = ctx.emit(ops.Affine((a,), ctx.out_name(0, "_acc"), W=M, b=bias))
    ctx.logical[acc] = _out_shape(ctx, a, out_shape)
    y_zp, dtype = _zero_point(ctx, _optional(node, 7))
    out = fake_quant(ctx, acc, ctx.out_name(), ctx.const(node.input[6]), y_zp, dtype)
    ctx.logical[out] = ctx.logical[acc]


@handles("AveragePool")
def _average_pool(ctx: LoadContext, node: onnx.NodeProto) -> None:
    x, shape = _image(ctx, node.input[0])
    kernel = tuple(attr(node, "kernel_shape"))
    kernel = (1,) + kernel if len(kernel) == 1 else kernel
    if attr(node, "ceil_mode", 0):
        raise ctx.unsupported("AveragePool with ceil_mode=1")
    strides, pads, dilations = _geometry(ctx, node, shape[1:], kernel, _one_d(ctx, x))
    if dilations != (1, 1):
        raise ctx.unsupported("AveragePool with dilations")
    M, out_shape = average_pool_matrix(shape, kernel, strides, pads, bool(attr(node, "count_include_pad", 0)))
    _emit_linear(ctx, x, M, out_shape)


@handles("com.microsoft.QLinearAveragePool", "com.microsoft.QLinearGlobalAveragePool")
def _qlinear_average_pool(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Average pooling of the dequantized input, then the output's quantization."""
    from vnncomp_qeb.io.onnx_quant_ops import _optional, _real_operand, _zero_point, fake_quant

    a, _ = _real_operand(ctx, node, 0)
    if a is None:
        raise ctx.unsupported("pooling of a constant")
    if attr(node, "channels_last", 0):
        raise ctx.unsupported("channels_last layout")
    _, shape = _image(ctx, a)
    if node.op_type == "QLinearGlobalAveragePool":
        M, out_shape = average_pool_matrix(shape, shape[1:])
    else:
        if attr(node, "ceil_mode", 0):
            raise ctx.unsupported("ceil_mode=1")
        kernel = tuple(attr(node, "kernel_shape"))
        kernel = (1,) + kernel if len(kernel) == 1 else kernel
        strides, pads, _ = _geometry(ctx, node, shape[1:], kernel, _one_d(ctx, a))
        M, out_shape = average_pool_matrix(shape, kernel, strides, pads, bool(attr(node, "count_include_pad", 0)))
    acc = ctx.emit(ops.Affine((a,), ctx.out_name(0, "_avg"), W=M))
    ctx.logical[acc] = _out_shape(ctx, a, out_shape)
    y_zp, dtype = _zero_point(ctx, _optional(node, 4))
    fake_quant(ctx, acc, ctx.out_name(), ctx.const(node.input[3]), y_zp, dtype)


@handles("GlobalAveragePool")
def _global_average_pool(ctx: LoadContext, node: onnx.NodeProto) -> None:
    x, shape = _image(ctx, node.input[0])
    M, out_shape = average_pool_matrix(shape, shape[1:])
    _emit_linear(ctx, x, M, out_shape)


@handles("MaxPool")
def _max_pool(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """``max`` over each window as ``m ← m + relu(s − m)`` over its elements ``s`` (each picked by
    a 0/1 patch-form map): the exact maximum in real arithmetic, built from ops every analysis
    bounds (onnxruntime returns one of the window's floats, which the bounds enclose)."""
    x, shape = _image(ctx, node.input[0])
    if len(node.output) > 1 and node.output[1]:
        raise ctx.unsupported("MaxPool's Indices output")
    kernel = tuple(attr(node, "kernel_shape"))
    kernel = (1,) + kernel if len(kernel) == 1 else kernel
    strides, pads, dilations = _geometry(ctx, node, shape[1:], kernel, _one_d(ctx, x))
    if attr(node, "ceil_mode", 0):  # the last window may run past the end: pad there (a max ignores it)
        extra = [max(-(-(shape[1 + i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1) // strides[i])
                     * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - (shape[1 + i] + pads[i] + pads[i + 2]), 0)
                 for i in (0, 1)]
        pads = (pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1])
    try:
        windows, out_shape = pool_windows(shape, kernel, strides, pads, dilations)
    except ValueError as exc:
        raise ctx.unsupported(str(exc)) from None
    n_in = int(np.prod(shape))
    out = ctx.out_name()
    m = None
    for k in range(windows.shape[1]):
        last = k == windows.shape[1] - 1
        s = ctx.emit(ops.Affine((x,), out if last and m is None else ctx.fresh(out + f"_pick{k}"),
                                W=selection(windows[:, k], n_in), precision="float64"))
        if m is None:
            m = s
            continue
        gap = ctx.emit(ops.Sub((s, m), ctx.fresh(out + f"_gap{k}")))
        up = ctx.emit(ops.Relu((gap,), ctx.fresh(out + f"_up{k}")))
        m = ctx.emit(ops.Add((m, up), out if last else ctx.fresh(out + f"_max{k}")))
    ctx.logical[m] = _out_shape(ctx, x, out_shape)
    if node.input[0] in ctx.tags:  # a max of integer codes is the code of the max (positive scale)
        ctx.tags[node.output[0]] = ctx.tags[node.input[0]]


@handles("BatchNormalization")
def _batch_norm(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Inference form: ``scale·(x − mean)/sqrt(var + eps) + B`` per channel (axis 1)."""
    if attr(node, "training_mode", 0):
        raise ctx.unsupported("BatchNormalization in training mode")
    x = ctx.var(node.input[0])
    if ctx.batchless:
        raise ctx.unsupported("BatchNormalization in a model without a batch axis")
    scale, bias, mean, var = (ctx.const_f64(n) for n in node.input[1:5])
    k = scale / np.sqrt(var + attr(node, "epsilon", 1e-5))
    # onnxruntime derives k and B − mean·k in float32 (its kernel and its Conv fusion alike): a few
    # roundings of k (relative), and of the shift, which may cancel (absolute, per channel)
    u = numerics.UNIT["float32"]
    shift_err = 4 * u * (np.abs(mean * k) + np.abs(bias))
    full = lambda v: np.broadcast_to(ctx.per_axis(v, 1, x), ctx.shape(x)).copy()  # noqa: E731
    mul = ctx.emit(ops.MulConst((x,), ctx.out_name(0, "_scaled"), c=ctx.per_axis(k, 1, x), slack=4 * u))
    ctx.emit(ops.AddConst((mul,), ctx.out_name(), c=ctx.per_axis(bias - mean * k, 1, x), slack_abs=full(shift_err)))
