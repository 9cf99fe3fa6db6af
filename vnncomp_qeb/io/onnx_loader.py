"""ONNX file → graph IR."""

from __future__ import annotations

import gzip
import os

import numpy as np
import onnx
from onnx import numpy_helper

from vnncomp_qeb.errors import ModelError
from vnncomp_qeb.io import (  # noqa: F401  (register handlers)
    onnx_conv_ops, onnx_dynamic_ops, onnx_float_ops, onnx_nonlinear_ops, onnx_quant_ops, onnx_shape_ops)
from vnncomp_qeb.io.onnx_context import FLOAT_TYPES, HANDLERS, PRECISION_OF, BatchAxisCrossed, LoadContext, attr
from vnncomp_qeb.io.onnx_quant_ops import dequantize_const
from vnncomp_qeb.io.ort_rewrites import as_onnxruntime_runs_it
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.fuse import folded_shift
from vnncomp_qeb.ir.graph import Graph

# Ops evaluated on constants by onnx's reference implementation when all their inputs are known.
_FOLDABLE = {"Constant", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Add", "Sub",
             "Mul", "Div", "Identity", "Concat", "Flatten", "Neg", "Shape", "Gather", "Slice",
             "ConstantOfShape", "Expand", "Tile", "Split", "Range", "Size", "Equal", "Greater", "Less",
             "GreaterOrEqual", "LessOrEqual", "Where", "Not", "And", "Or", "Min", "Max", "Abs",
             "ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin"}

# Ops whose inputs are always constants (shapes, sizes): folded, never met on a variable.
CONSTANT_ONLY = ("Constant", "ConstantOfShape", "Range", "Size")


def read_model(path: str) -> onnx.ModelProto:
    """Read an ONNX model from ``path`` (``.gz`` compressed or not), with clear errors.

    Tensors stored as external data are read from files beside the model (relative to the
    model's own folder, never the working directory), and kept in the returned model."""
    if os.path.isdir(path):
        raise ModelError("is a folder, not an ONNX file", path=path)
    if not os.path.isfile(path):
        raise ModelError("file not found", path=path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
        model = onnx.load_model_from_string(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ModelError(f"cannot read file ({exc})", path=path) from exc
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"not a valid ONNX model ({type(exc).__name__}: {exc})", path=path) from exc
    if not model.graph.node:
        raise ModelError("not a valid ONNX model (the graph has no nodes)", path=path)
    _load_external_data(model, path)
    return model


def _load_external_data(model: onnx.ModelProto, path: str) -> None:
    """Fill in tensors stored outside the file, from the model's own folder."""
    from onnx import external_data_helper

    if not any(external_data_helper.uses_external_data(t)
               for t in external_data_helper._get_all_tensors(model)):
        return
    base = os.path.dirname(os.path.abspath(path))
    try:
        external_data_helper.load_external_data_for_model(model, base)
    except Exception as exc:
        raise ModelError(f"cannot read its external data from {base} ({type(exc).__name__}: {exc})",
                         path=path) from exc


def load_onnx(path: str, name: str | None = None) -> Graph:
    """Load the ONNX model at ``path`` as an IR graph; raises :class:`ModelError`."""
    return model_to_graph(read_model(path), path, name)


# the float types each type holds every value of
_HOLDS = {"float64": {"float64", "float32", "float16", "bfloat16"}, "float32": {"float32", "float16", "bfloat16"},
          "float16": {"float16"}, "bfloat16": {"bfloat16"}}


def model_to_graph(model: onnx.ModelProto, path: str = "<model>", name: str | None = None,
                   hidden: tuple[str, ...] = (), feed: str = "float32") -> Graph:
    """Translate a loaded ModelProto into the IR. The graph's outputs are the model's, then the
    tensors named in ``hidden`` (observed as VNN-LIB 2.0 hidden variables). A model with several
    inputs reads one flat input: their concatenation, in the order the graph lists them. The
    input holds floats of type ``feed``; an input type that does not hold them all rounds them.
    The model is read as onnxruntime rewrites it when it loads it (double QDQ pairs merged,
    float weights in QDQ groups quantized: :mod:`vnncomp_qeb.io.ort_rewrites`)."""
    try:
        model = as_onnxruntime_runs_it(model)
    except Exception as exc:  # noqa: BLE001 - never read a model other than onnxruntime runs
        raise ModelError(f"cannot reproduce onnxruntime's load-time rewrites ({type(exc).__name__}: {exc})",
                         path=path) from exc
    try:
        return _to_graph(model, path, name, False, hidden, feed)
    except BatchAxisCrossed as first:
        # a fixed leading 1 read as the batch axis, but the graph mixes it with the others (a
        # Transpose of a [1, n] input): the whole input is the one sample
        try:
            return _to_graph(model, path, name, True, hidden, feed)
        except ModelError:
            raise first from None


def _to_graph(model: onnx.ModelProto, path: str, name: str | None, whole_sample: bool,
              hidden: tuple[str, ...], feed: str) -> Graph:
    ctx = LoadContext(path)
    ctx.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    g = model.graph
    for init in g.initializer:
        ctx.constants[init.name] = numpy_helper.to_array(init)
        value = ctx.constants[init.name]
        if value.dtype.kind == "f" and np.isnan(value).any():
            raise ModelError(f"initializer '{init.name}' holds {int(np.isnan(value).sum())} NaN value(s); "
                             "a network with NaN weights has no meaningful error bound", path=path)
    for sparse in g.sparse_initializer:
        ctx.constants[sparse.values.name] = numpy_helper.to_array(sparse)
    inputs = _graph_inputs(g, ctx, path, whole_sample)
    _element_types(model, ctx)
    if len(inputs) == 1:
        input_name, input_shape = inputs[0]
        ctx.samples[input_name] = np.zeros((1,) + input_shape)
    else:  # one flat input; each model input is its slice
        sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in inputs]
        input_name, input_shape = ctx.fresh("inputs"), (sum(sizes),)
        ctx.samples[input_name] = np.zeros((1,) + input_shape)
        starts = np.cumsum([0] + sizes)
        for (name_k, shape), a, b in zip(inputs, starts[:-1], starts[1:]):
            ctx.emit(ops.Gather((input_name,), name_k, indices=np.arange(a, b), shape=shape,
                                source=f"input {name_k}"))
    ctx.input_name = input_name
    for name_k, _ in inputs:
        in_type = PRECISION_OF[next(i for i in g.input if i.name == name_k).type.tensor_type.elem_type]
        if feed not in _HOLDS[in_type]:
            # the input reaches the model cast to its input type (as the replay feeds it)
            onnx_float_ops.cast_float(ctx, name_k, in_type, name_k)

    for node in g.node:
        ctx.node = node
        ctx.precision = ctx.node_precision(node)
        _translate(ctx, node)
    ctx.node = None

    outputs = []
    observed = [(out.name, out.type.tensor_type.elem_type, "output") for out in g.output]
    observed += [(h, ctx.types.get(h), "hidden tensor") for h in hidden]
    for out_name, elem_type, what in observed:
        ir_name = ctx.resolve(out_name)
        if ir_name in ctx.constants:  # e.g. a Shape: the same values for every input
            ir_name = onnx_float_ops.constant_tensor(ctx, ctx.constants[ir_name].reshape(-1), out_name)
        if ir_name not in ctx.samples:
            raise ModelError(f"{what} '{out_name}' is not computed by any node", path=path)
        if out_name in ctx.tags:  # the file outputs integer codes, not real values
            ir_name = onnx_float_ops.integer_code(ctx, ir_name, ctx.tags[out_name], out_name)
        out_type = PRECISION_OF.get(elem_type)
        if out_type in ("float16", "bfloat16"):
            # what the file returns is rounded to its output type (onnxruntime may compute the
            # ops before it in float32 and round only here): the reference evaluator rounds too
            ir_name = onnx_float_ops.cast_float(ctx, ir_name, out_type, out_name + "_out")
        outputs.append(ir_name)
    graph_ops = fuse_affine_bias(ctx.ops, outputs)
    return Graph(input_name, input_shape, graph_ops, outputs, name=name or os.path.basename(path))


def _element_types(model: onnx.ModelProto, ctx: LoadContext) -> None:
    """Element types of all tensors (for each op's rounding precision). Where inference
    cannot type a tensor, the coarsest float type in the model is assumed."""
    from vnncomp_qeb.io.onnx_context import PRECISION_OF
    from vnncomp_qeb.ir.ops import coarsest

    g = model.graph
    for init in g.initializer:
        ctx.types[init.name] = init.data_type
    for vi in list(g.input) + list(g.output):
        ctx.types[vi.name] = vi.type.tensor_type.elem_type
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            if vi.type.tensor_type.elem_type:
                ctx.types[vi.name] = vi.type.tensor_type.elem_type
    except Exception:  # unusual models: fall back to the coarsest type below
        pass
    seen = [PRECISION_OF[t] for t in ctx.types.values() if t in PRECISION_OF]
    ctx.default_precision = coarsest(*seen) if seen else "float32"


def _graph_inputs(g: onnx.GraphProto, ctx: LoadContext, path: str,
                  whole_sample: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """The variable inputs (old opsets list initializers as inputs too) with their per-sample
    shapes, in the graph's order."""
    variables = [i for i in g.input if i.name not in ctx.constants]
    if not variables:
        raise ModelError("the model has no input tensor", path=path)
    dims_of = {}
    for inp in variables:
        ttype = inp.type.tensor_type
        if ttype.elem_type not in FLOAT_TYPES:
            raise ModelError(f"input '{inp.name}' has data type "
                             f"{onnx.TensorProto.DataType.Name(ttype.elem_type)}; only float inputs are supported",
                             path=path)
        dims_of[inp.name] = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    # a batch axis is a free or unit first axis of a rank ≥ 2 input (of every input); otherwise
    # the whole shape is one sample (the IR adds the batch axis)
    ctx.batchless = not all(len(d) >= 2 and d[0] in (None, 1) for d in dims_of.values())
    if whole_sample and all(d and d[0] == 1 for d in dims_of.values()):
        ctx.batchless = True
    out = []
    for name, dims in dims_of.items():
        per_sample = dims[1:] if not ctx.batchless else dims
        if not dims or any(d is None or d <= 0 for d in per_sample):
            raise ModelError(f"input '{name}' must have a static shape, got {dims}", path=path)
        out.append((name, tuple(int(d) for d in per_sample)))
    return out


def _translate(ctx: LoadContext, node: onnx.NodeProto) -> None:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain + "."
    key = domain + node.op_type
    inputs = [n for n in node.input if n]
    if all(ctx.is_const(n) for n in inputs) and (key in _FOLDABLE or key == "DequantizeLinear"):
        _fold(ctx, node)
        return
    if onnx_dynamic_ops.reads_dynamic(ctx, node):  # a runtime quantization scale, followed symbolically
        onnx_dynamic_ops.translate_dynamic(ctx, node)
        return
    handler = HANDLERS.get(key)
    if handler is None:
        raise ctx.unsupported("operator not supported")
    handler(ctx, node)


def _fold(ctx: LoadContext, node: onnx.NodeProto) -> None:
    """Evaluate a node whose inputs are all constants."""
    if node.op_type == "DequantizeLinear":  # exact, in float64
        zp = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else 0
        ctx.constants[node.output[0]] = dequantize_const(
            ctx.const(node.input[0]), ctx.const(node.input[1]), zp, attr(node, "axis", 1))
        return
    from onnx.reference import ReferenceEvaluator

    feeds = {n: ctx.const(n) for n in node.input if n}
    try:
        results = ReferenceEvaluator(node).run(None, feeds)
    except Exception as exc:
        raise ctx.unsupported(f"cannot evaluate on constants ({exc})") from exc
    for name, value in zip(node.output, results):
        ctx.constants[name] = np.asarray(value)


def fuse_affine_bias(op_list: list[ops.Op], outputs: list[str]) -> list[ops.Op]:
    """Fold ``AddConst`` into the ``Affine`` before it when the constant is a per-output bias
    (MatMul followed by Add): fewer ops, same function."""
    readers: dict[str, int] = {}
    for op in op_list:
        for n in op.inputs:
            readers[n] = readers.get(n, 0) + 1
    by_output = {op.output: op for op in op_list}
    fused: list[ops.Op] = []
    dropped: set[int] = set()
    for op in op_list:
        prev = by_output.get(op.inputs[0]) if op.inputs else None
        if (isinstance(op, ops.AddConst) and isinstance(prev, ops.Affine)
                and readers.get(prev.output) == 1 and prev.output not in outputs
                and np.ndim(op.c) <= 1 and np.size(op.c) in (1, prev.W.shape[1])):
            bias = np.broadcast_to(np.asarray(op.c, dtype=np.float64).reshape(-1), (prev.W.shape[1],))
            new = ops.Affine(prev.inputs, op.output, W=prev.W,
                             b=bias.copy() if prev.b is None else prev.b + bias,
                             source=f"{prev.source} + {op.source}",
                             precision=ops.coarsest(prev.precision, op.precision), **folded_shift(prev, op, bias))
            dropped.add(id(prev))
            fused[fused.index(prev)] = new
            by_output[op.output] = new
            continue
        fused.append(op)
    return fused
