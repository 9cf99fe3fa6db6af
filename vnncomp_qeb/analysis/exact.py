"""Which tensors onnxruntime computes *exactly*, and on which power-of-two grid.

In a fixed-point network fed integer codes (QEBVerif's float64 twins; power-of-two QDQ models),
every value is a dyadic rational with few bits: sums and products are exact in the op's float
type, so a value that feeds a rounding step lies
on a known grid ``g·Z`` and a tie is rounded the one way the mode says. The rounding band then
shrinks from the widened ``[−0.5 − w, 0.5 + w]`` to e.g. ``[−0.5 + g, 0.5]`` (round half up),
which tightens every bound downstream (:func:`vnncomp_qeb.ir.float_error.rounding_band`).
Each op's ``grid_step`` rule says on which grid its output lies; this module walks the graph.

The analysis is static: it runs once per graph over the whole range of the input codes, so the
magnitude condition (no partial sum needs more than 52 bits on its grid) holds for every box.
Anything not provably exact keeps ``exact_step = None`` and the widened band.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vnncomp_qeb.analysis.interval import interval_bounds
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.ir.grid import FLOAT_VALUES, max_mag


def annotate_exact(graph: Graph, input_step: float | None, lower: np.ndarray, upper: np.ndarray) -> Graph:
    """A copy of ``graph`` whose rounding ops carry ``exact_step`` where their input is computed
    exactly, for inputs on the grid ``input_step·Z`` (None: any float of the input's type) within ``[lower, upper]``
    (flat; every box analysed later must lie inside it)."""
    bounds = interval_bounds(graph, np.asarray(lower, dtype=np.float64)[None],
                             np.asarray(upper, dtype=np.float64)[None], keep_all=True)
    steps = {graph.input_name: FLOAT_VALUES if input_step is None else float(input_step)}
    new_ops = []
    for op in graph.ops:
        st = [steps.get(n) for n in op.inputs]
        rounded_grid = getattr(op, "rounded_grid", None)  # a rounding step: what does it round?
        if rounded_grid is not None:
            t = rounded_grid(st[0], max_mag(bounds, op.inputs[0]))
            if t is not None and np.isfinite(t):
                op = replace(op, exact_step=t)
        new_ops.append(op)
        steps[op.output] = op.grid_step(st, bounds)  # the op's own rule
    return replace(graph, ops=new_ops, shapes=dict(graph.shapes))
