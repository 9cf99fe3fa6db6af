"""Write a difference model ``Y = N(X) − Q(X)`` from a float and a quantized ONNX file."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import compose, helper, version_converter

from vnncomp_qeb.errors import ModelError
from vnncomp_qeb.io.onnx_context import FLOAT_TYPES
from vnncomp_qeb.io.onnx_loader import read_model
from vnncomp_qeb.io.ort_session import ORT_DTYPES, ort_session

MAX_IR_VERSION = 10  # what the pinned onnxruntime reads


def _variable_input(model: onnx.ModelProto, path: str) -> onnx.ValueInfoProto:
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1:
        raise ModelError(f"expected one input, found {len(ins)}", path=path)
    return ins[0]


def strip_initializer_inputs(model: onnx.ModelProto) -> None:
    """Old exporters (IR < 4) list initializers as graph inputs; drop them from the inputs and
    raise the IR version to 4, where that is allowed."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.ir_version = max(model.ir_version, 4)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def build_twin(float_path: str, quant_path: str) -> onnx.ModelProto:
    """One model with input ``X`` (the float model's input type and shape) and output
    ``Y = N(X) − Q(X)``; both branches keep their own nodes under the prefixes ``N_``/``Q_``."""
    raw = {path: read_model(path) for path in (float_path, quant_path)}
    target = max([13] + [_default_opset(m) for m in raw.values()])
    models = []
    for prefix, path in (("N_", float_path), ("Q_", quant_path)):
        m = raw[path]
        if len(m.graph.output) != 1:
            raise ModelError(f"expected one output, found {len(m.graph.output)}", path=path)
        strip_initializer_inputs(m)
        if _default_opset(m) != target:  # same opset for both, with node semantics converted
            try:
                m = version_converter.convert_version(m, target)
            except Exception as exc:
                raise ModelError(f"cannot convert to opset {target} ({exc})", path=path) from exc
        models.append(compose.add_prefix(m, prefix))
    (n, q) = models
    n_in, q_in = _variable_input(n, float_path), _variable_input(q, quant_path)
    n_out, q_out = n.graph.output[0], q.graph.output[0]
    _check_compatible(n_in, q_in, "input", float_path, quant_path)
    _check_compatible(n_out, q_out, "output", float_path, quant_path)
    x = onnx.ValueInfoProto()
    x.CopyFrom(n_in)
    x.name = "X"
    y = onnx.ValueInfoProto()
    y.CopyFrom(n_out)
    y.name = "Y"
    # Q reads X cast to its own input type, as it would be fed on its own (a float16 Q gets
    # X rounded to float16); its output is cast (exactly, by widening) to N's output type
    nodes = [helper.make_node("Identity", ["X"], [n_in.name], name="N_input")]
    nodes += _convert("X", q_in.name, _elem(q_in), _elem(n_in), "Q_input")
    nodes += list(n.graph.node) + list(q.graph.node)
    q_y = q_out.name
    if _elem(q_out) != _elem(n_out):
        q_y = "Q_output_cast"
        nodes += _convert(q_out.name, q_y, _elem(n_out), _elem(q_out), "Q_output")
    nodes.append(helper.make_node("Sub", [n_out.name, q_y], ["Y"], name="difference"))
    graph = helper.make_graph(nodes, "twin", [x], [y],
                              initializer=list(n.graph.initializer) + list(q.graph.initializer))
    opsets: dict[str, int] = {}
    for m in models:
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    opsets[""] = max(opsets.get("", 0), 13)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="vnncomp-qeb twin",
                              ir_version=min(max(m.ir_version for m in models), MAX_IR_VERSION))
    _check_faithful(model, float_path, quant_path)
    return model


def _check_faithful(model: onnx.ModelProto, float_path: str, quant_path: str, samples: int = 64) -> None:
    """What we write must run where it will be judged, and compute what the two files compute:
    onnxruntime on the twin gives exactly N(x) − Q(x) (each file fed x in its own input type,
    the difference taken in N's output type) on random inputs."""
    from vnncomp_qeb.io.ort_session import session

    try:
        twin = ort_session(model.SerializeToString())
    except ModelError as exc:
        raise ModelError(f"the twin of {float_path} and {quant_path} does not load: {exc}") from None
    n_sess, q_sess = session(float_path), session(quant_path)
    inp = twin.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    rng = np.random.default_rng(0)
    for _ in range(samples):
        x = rng.normal(0.0, 4.0, shape).astype(ORT_DTYPES[inp.type])
        n_y = n_sess.run(None, {n_sess.get_inputs()[0].name: x.astype(ORT_DTYPES[n_sess.get_inputs()[0].type])})[0]
        q_y = q_sess.run(None, {q_sess.get_inputs()[0].name: x.astype(ORT_DTYPES[q_sess.get_inputs()[0].type])})[0]
        want = n_y - q_y.astype(n_y.dtype)
        got = twin.run(None, {inp.name: x})[0]
        if not np.array_equal(got.reshape(-1), want.reshape(-1), equal_nan=True):
            dev = float(np.nanmax(np.abs(got.astype(np.float64).reshape(-1) - want.astype(np.float64).reshape(-1))))
            raise ModelError(f"the twin of {float_path} and {quant_path} does not compute N − Q as the two "
                             f"files do in onnxruntime (off by up to {dev:.3g} at a random input)")



def _elem(vi: onnx.ValueInfoProto) -> int:
    return vi.type.tensor_type.elem_type


def _convert(src: str, dst: str, to: int, frm: int, name: str) -> list[onnx.NodeProto]:
    """Nodes giving ``dst`` = ``src`` converted from type ``frm`` to ``to``. The float16 side of
    the Cast gets an unbounded Clip: onnxruntime runs float16 ops without a float16 kernel in
    float32 and drops the Cast pairs that meet, so a float16 value is rounded only where a
    float16 kernel (Clip has one) or the graph's edge sees it — as the separate file's is."""
    if to == frm:
        return [helper.make_node("Identity", [src], [dst], name=name)]
    if FLOAT_RANK.get(to, 0) >= FLOAT_RANK.get(frm, 0):  # widening: round (in float16) first
        return [helper.make_node("Clip", [src], [dst + "_rounded"], name=name + "_keep_rounding"),
                helper.make_node("Cast", [dst + "_rounded"], [dst], name=name, to=to)]
    return [helper.make_node("Cast", [src], [dst + "_cast"], name=name, to=to),
            helper.make_node("Clip", [dst + "_cast"], [dst], name=name + "_keep_rounding")]


# float types from coarsest to finest
FLOAT_RANK = {onnx.TensorProto.BFLOAT16: 1, onnx.TensorProto.FLOAT16: 1, onnx.TensorProto.FLOAT: 2,
              onnx.TensorProto.DOUBLE: 3}


def _check_compatible(a: onnx.ValueInfoProto, b: onnx.ValueInfoProto, what: str, a_path: str, b_path: str) -> None:
    """Both models' tensors must be real-valued and agree in per-sample shape."""
    for vi, path in ((a, a_path), (b, b_path)):
        if _elem(vi) not in FLOAT_TYPES:
            raise ModelError(f"the {what} '{vi.name}' has type "
                             f"{onnx.TensorProto.DataType.Name(_elem(vi))}; a twin needs float tensors", path=path)
    dims = [[d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim][1:]
            for vi in (a, b)]
    sizes = [int(np.prod(d)) if d and None not in d else None for d in dims]
    if sizes[0] is not None and sizes[1] is not None and sizes[0] != sizes[1]:
        raise ModelError(f"the two models' {what}s differ in size: {dims[0]} in {a_path}, {dims[1]} in {b_path}")
