"""Interval bound propagation over the IR, batched over boxes, sound for floating-point execution.

Every bound encloses both the exact real value and what onnxruntime computes in the type each
op runs in (``op.precision``): each op's ``interval`` rule widens by its float error, whose
margins all live in :mod:`vnncomp_qeb.ir.float_error`.
"""

from __future__ import annotations

import numpy as np

from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph


def propagate_op(op: ops.Op, bounds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Interval of ``op``'s output from the intervals of its inputs (batched): the op's own rule."""
    return op.interval(bounds[0] if len(op.inputs) == 1 else bounds)


def interval_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray,
                    keep_all: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bounds of the graph's tensors over a batch of boxes ``lower``/``upper`` of shape
    (B, input_size); returns the outputs' bounds (every tensor's when ``keep_all``)."""
    B = lower.shape[0]
    shape = (B,) + tuple(graph.input_shape)
    bounds = {graph.input_name: (np.asarray(lower, dtype=np.float64).reshape(shape),
                                 np.asarray(upper, dtype=np.float64).reshape(shape))}
    for op in graph.ops:
        bounds[op.output] = propagate_op(op, [bounds[n] for n in op.inputs])
    return bounds if keep_all else {o: bounds[o] for o in graph.outputs}


def output_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the flat output vector over a batch of boxes: two arrays (B, output_size)."""
    b = interval_bounds(graph, lower, upper)
    B = lower.shape[0]
    lo = np.concatenate([b[o][0].reshape(B, -1) for o in graph.outputs], axis=1)
    hi = np.concatenate([b[o][1].reshape(B, -1) for o in graph.outputs], axis=1)
    return lo, hi
