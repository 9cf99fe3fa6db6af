"""Join several networks into one graph over a joint input vector (VNN-LIB 2.0 queries)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph


def compose(parts: list[tuple[str, Graph, np.ndarray]], n_inputs: int, input_name: str = "x") -> Graph:
    """One graph whose input is the flat joint vector (``n_inputs``) and whose output vector is
    the concatenation of the parts' outputs. Each part is (prefix, graph, index) where ``index``
    picks the part's flat input from the joint vector."""
    all_ops: list[ops.Op] = []
    outputs: list[str] = []
    for prefix, g, index in parts:
        rename = {g.input_name: f"{prefix}/{g.input_name}"}
        all_ops.append(ops.Gather((input_name,), rename[g.input_name], indices=np.asarray(index),
                                  shape=tuple(g.input_shape), source=f"input of {prefix}"))
        for op in g.ops:
            rename[op.output] = f"{prefix}/{op.output}"
            all_ops.append(replace(op, inputs=tuple(rename[n] for n in op.inputs), output=rename[op.output]))
        outputs.extend(rename[o] for o in g.outputs)
    return Graph(input_name, (n_inputs,), all_ops, outputs, name="+".join(p for p, _, _ in parts))
