"""Write a difference model ``Y = N(X) − Q(X)`` from a float and a quantized ONNX file."""

from __future__ import annotations

import onnx
from onnx import compose, helper, version_converter

from vnncomp_qeb.errors import ModelError
from vnncomp_qeb.io.onnx_loader import read_model

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
    x = onnx.ValueInfoProto()
    x.CopyFrom(n_in)
    x.name = "X"
    y = onnx.ValueInfoProto()
    y.CopyFrom(n.graph.output[0])
    y.name = "Y"
    nodes = [helper.make_node("Identity", ["X"], [n_in.name], name="N_input"),
             helper.make_node("Identity", ["X"], [q_in.name], name="Q_input")]
    nodes += list(n.graph.node) + list(q.graph.node)
    nodes.append(helper.make_node("Sub", [n.graph.output[0].name, q.graph.output[0].name], ["Y"], name="difference"))
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
    return model
