"""Gradient attack on the float surrogate: projected gradient ascent of the unsafe margin.

Rounding has zero gradient almost everywhere, so the backward pass treats every rounding step
as the identity inside its range (straight-through); the forward pass stays exact, so every
point is scored by the true reference semantics (and replayed by onnxruntime before use).
"""

from __future__ import annotations

import numpy as np

from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.spec import Case


def _backward(op: ops.Op, g: np.ndarray, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Gradients w.r.t. the op's inputs from the gradient ``g`` of its output: its own rule."""
    return op.backward(g, xs)


def margin_gradient(graph: Graph, case: Case, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(margin (B,), straight-through gradient of the case margin w.r.t. flat inputs (B, n))."""
    B = x.shape[0]
    values = graph.run(x.reshape((B,) + tuple(graph.input_shape)), keep_all=True)
    y = np.concatenate([values[o].reshape(B, -1) for o in graph.outputs], axis=1)
    # margin = max over polytopes of min over rows (b − A·y): the active row's −A is the gradient
    best = np.full(B, -np.inf)
    dy = np.zeros_like(y)
    for p in case.polytopes:
        if p.A.shape[0] == 0:
            continue
        slack = p.slack(y)
        k = np.argmin(slack, axis=1)
        m = slack[np.arange(B), k]
        better = m > best
        best = np.where(better, m, best)
        dy[better] = -p.A[k[better]]
    grads: dict[str, np.ndarray] = {}
    start = 0
    for o in graph.outputs:
        size = values[o][0].size
        grads[o] = dy[:, start:start + size].reshape(values[o].shape)
        start += size
    for op in reversed(graph.ops):
        g = grads.pop(op.output, None)
        if g is None:
            continue
        ins = [values[n] for n in op.inputs]
        for name, gi in zip(op.inputs, _backward(op, g, ins)):
            grads[name] = grads[name] + gi if name in grads else gi
    gx = grads.get(graph.input_name, np.zeros((B,) + tuple(graph.input_shape)))
    return best, gx.reshape(B, -1)


def pgd(graph: Graph, case: Case, x0: np.ndarray, steps: int = 20, rng: np.random.Generator | None = None,
        ) -> np.ndarray:
    """Sign-gradient ascent from the rows of ``x0`` inside the case's box; returns every visited
    point (the caller scores them exactly)."""
    lo, hi = case.lower, case.upper
    width = np.maximum(hi - lo, 0.0)
    x = np.clip(x0, lo, hi)
    visited = [x]
    for i in range(steps):
        _, g = margin_gradient(graph, case, x)
        step = width * (0.25 * (1 - i / steps) + 0.02)
        x = np.clip(x + step * np.sign(g), lo, hi)
        visited.append(x)
    return np.vstack(visited)
