"""Differential reachability analysis: sound bounds on N(x) − Q(x) over boxes, several modes.

- ``base``: interval bounds of the difference graph;
- ``con``: difference intervals layer by layer with the activation case analysis of
  :mod:`difference`, interval neuron bounds (QEBVerif's Con; layered twins, else ``base``);
- ``sym``: symbolic (back-substituted) bounds of N and of Q computed apart, then subtracted
  (QEBVerif's Sym);
- ``joint``: the difference itself back-substituted through both branches to the shared
  input, so their common part cancels;
- ``diff``: symbolic differences layer by layer (:mod:`difference`, layered twins only; other
  graphs fall back to ``joint``), tightest when Q has many bits;
- ``best`` (default): the intersection of base, joint and diff (sym never beat joint in
  ``scripts/bench_dra.py``, so it is left out of the default for speed).
Intermediate bounds are refined by back-substitution at every nonlinear op (full CROWN).
Works on any graph of the IR (normalised by :func:`vnncomp_qeb.ir.fuse.normalise`); batched
over boxes, in chunks that bound memory.
"""

from __future__ import annotations

import numpy as np

from vnncomp_qeb.analysis.backsub import Bounds, Relaxations, exact_by_intervals, linear_bounds
from vnncomp_qeb.analysis.difference import DifferenceAnalysis, difference_graph
from vnncomp_qeb.analysis.interval import propagate_op
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.ir.twin import find_twins

MODES = ("base", "con", "sym", "joint", "diff", "best")
_FLOATS_PER_CHUNK = 3e7  # coefficient entries kept at once (~240 MB)


def _size(graph: Graph, name: str) -> int:
    return int(np.prod(graph.shapes[name], dtype=np.int64))


def refined_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray, symbolic: bool = True):
    """Interval bounds of every tensor; with ``symbolic``, each nonlinear op's input is first
    tightened by back-substitution. Returns (bounds, relaxations)."""
    B = lower.shape[0]
    shape = (B,) + tuple(graph.input_shape)
    bounds: Bounds = {graph.input_name: (lower.reshape(shape), upper.reshape(shape))}
    relaxations = Relaxations()
    exact = exact_by_intervals(graph)
    for op in graph.ops:
        if symbolic and (isinstance(op, ops.Clamp) or getattr(op, "relaxes_input", False)) and op.inputs[0] not in exact:
            _refine(graph, bounds, relaxations, op, op.inputs[0])
        bounds[op.output] = propagate_op(op, [bounds[n] for n in op.inputs])
    return bounds, relaxations


def _refine(graph: Graph, bounds: Bounds, relaxations: Relaxations, op: ops.Op, t: str) -> None:
    """Tighten the bounds of ``t`` by back-substitution, for each box only on its neurons that
    cross a kink of ``op`` (only their relaxations depend on how tight the bounds are)."""
    old_lo, old_hi = bounds[t]
    B = old_lo.shape[0]
    cross = _unstable(op, old_lo, old_hi)
    rows = np.flatnonzero(cross.any(axis=0))
    if rows.size:  # one pass for the batch; each box keeps only its own unstable rows
        lo, hi = linear_bounds(graph, bounds, relaxations, t, np.eye(_size(graph, t))[rows])
        flat_lo, flat_hi = old_lo.reshape(B, -1).copy(), old_hi.reshape(B, -1).copy()
        mine = cross[:, rows]
        flat_lo[:, rows] = np.where(mine, np.maximum(flat_lo[:, rows], lo), flat_lo[:, rows])
        flat_hi[:, rows] = np.where(mine, np.minimum(flat_hi[:, rows], hi), flat_hi[:, rows])
        bounds[t] = (flat_lo.reshape(old_lo.shape), flat_hi.reshape(old_hi.shape))


def _unstable(op: ops.Op, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(B, n) bool: neurons whose interval crosses a kink of the op (only their relaxations
    depend on how tight their input bounds are)."""
    if getattr(op, "relaxes_input", False):  # a smooth function: every neuron's relaxation does
        return np.ones(lo.reshape(lo.shape[0], -1).shape, dtype=bool)
    s, a, b, _ = op.clamp_params()
    s = np.asarray(s, dtype=np.float64)
    kinks = [k for k in (s * a, s * b) if np.all(np.isfinite(k))]
    B = lo.shape[0]
    cross = np.zeros(lo.reshape(B, -1).shape, dtype=bool)
    for k in kinks:
        k = np.broadcast_to(k, lo.shape[1:]).reshape(-1)
        cross |= (lo.reshape(B, -1) < k) & (hi.reshape(B, -1) > k)
    return cross


def _outputs(graph: Graph, bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    B = bounds[graph.input_name][0].shape[0]
    lo = np.concatenate([bounds[o][0].reshape(B, -1) for o in graph.outputs], axis=1)
    hi = np.concatenate([bounds[o][1].reshape(B, -1) for o in graph.outputs], axis=1)
    return lo, hi


def _output_matrix(graph: Graph) -> tuple[str, np.ndarray] | None:
    """The single output tensor with an identity objective, when the graph has one output."""
    if len(graph.outputs) != 1:
        return None
    n = _size(graph, graph.outputs[0])
    return graph.outputs[0], np.eye(n)


def _sym(graph: Graph, bounds: Bounds, relaxations: Relaxations) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of N and Q apart, subtracted, then carried to the outputs by intervals."""
    local = dict(bounds)
    twins = find_twins(graph)
    for twin in twins:
        n_lo, n_hi = linear_bounds(graph, bounds, relaxations, twin.sub.inputs[0], np.eye(_size(graph, twin.sub.inputs[0])))
        q_lo, q_hi = linear_bounds(graph, bounds, relaxations, twin.sub.inputs[1], np.eye(_size(graph, twin.sub.inputs[1])))
        shape = local[twin.sub.output][0].shape
        lo, hi = (n_lo - q_hi).reshape(shape), (n_hi - q_lo).reshape(shape)
        local[twin.sub.output] = (np.maximum(local[twin.sub.output][0], lo), np.minimum(local[twin.sub.output][1], hi))
    if not twins:  # one network (or a 2.0 join): symbolic bounds of each output
        found = _output_matrix(graph)
        if found is not None:
            return linear_bounds(graph, bounds, relaxations, *found)
        return _outputs(graph, local)
    subs = {t.sub.output for t in twins}
    first = min(i for i, op in enumerate(graph.ops) if op.output in subs)
    for op in graph.ops[first:]:  # carry the differences' bounds to the outputs
        if op.output not in subs:
            local[op.output] = propagate_op(op, [local[n] for n in op.inputs])
    return _outputs(graph, local)


def _chunk(graph: Graph) -> int:
    widest = max([graph.input_size] + [_size(graph, n) for n in graph.shapes])
    return max(1, int(_FLOATS_PER_CHUNK // (2 * widest * widest)))


def difference_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray,
                      mode: str = "best") -> tuple[np.ndarray, np.ndarray]:
    """Bounds (B, output_size) of the output vector over boxes ``lower``/``upper`` (B, n)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    lower, upper = np.atleast_2d(lower), np.atleast_2d(upper)
    step = _chunk(graph)
    parts = [_difference_chunk(graph, lower[i:i + step], upper[i:i + step], mode)
             for i in range(0, lower.shape[0], step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def cached_difference_graph(graph: Graph):
    """The graph's difference graph (or None), built once per graph and kept on it."""
    if not hasattr(graph, "_difference_graph"):
        graph._difference_graph = difference_graph(graph)
    return graph._difference_graph


def _difference_chunk(graph, lower, upper, mode):
    bounds, relaxations = refined_bounds(graph, lower, upper, symbolic=mode not in ("base", "con"))
    lo, hi = _outputs(graph, bounds)
    if mode == "base":
        return lo, hi
    if mode == "con":
        dg = cached_difference_graph(graph)
        if dg is None:
            return lo, hi
        c_lo, c_hi = DifferenceAnalysis(dg, bounds, relaxations, symbolic=False).interval_bounds()
        return np.maximum(lo, c_lo), np.minimum(hi, c_hi)
    if mode == "sym":
        return _sym(graph, bounds, relaxations)
    found = _output_matrix(graph)
    dg = cached_difference_graph(graph) if mode in ("diff", "best") else None
    if dg is not None:
        d_lo, d_hi = DifferenceAnalysis(dg, bounds, relaxations).output_bounds()
        lo, hi = np.maximum(lo, d_lo), np.minimum(hi, d_hi)
    if found is not None and (mode in ("joint", "best") or dg is None):
        j_lo, j_hi = linear_bounds(graph, bounds, relaxations, *found)
        lo, hi = np.maximum(lo, j_lo), np.minimum(hi, j_hi)
    return lo, hi


def row_lower_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray,
                     input_coeffs: list | None = None) -> np.ndarray:
    """Lower bounds (B, rows) of ``A·y`` over the boxes: the best of the output intervals and the
    rows back-substituted jointly (the difference of a two-network query cancels this way).
    With ``input_coeffs`` (a list), one (B, rows, n) array is appended: each bound's linear
    coefficients on the input (zero where the output intervals gave the bound)."""
    step = _chunk(graph)
    out, coeffs = [], []
    for i in range(0, lower.shape[0], step):
        L, U_ = lower[i:i + step], upper[i:i + step]
        bounds, relaxations = refined_bounds(graph, L, U_)
        lo, hi = _outputs(graph, bounds)
        best = lo @ np.maximum(A, 0).T + hi @ np.minimum(A, 0).T
        best -= 1e-12 * (np.abs(lo) + np.abs(hi)) @ np.abs(A).T
        want = input_coeffs is not None
        coeff = np.zeros(best.shape + (graph.input_size,)) if want else None
        candidates = []  # (row lower bounds, [their input coefficients] when wanted)
        found = _output_matrix(graph)
        if found is not None:
            got: list | None = [] if want else None
            candidates.append((linear_bounds(graph, bounds, relaxations, found[0], A, got)[0], got))
        dg = cached_difference_graph(graph)
        if dg is not None:
            got = [] if want else None
            candidates.append((DifferenceAnalysis(dg, bounds, relaxations).rows(A, got)[0], got))
        for rows, got in candidates:
            better = rows > best
            best = np.where(better, rows, best)
            if want:
                coeff = np.where(better[:, :, None], got[0][:, :A.shape[0]], coeff)
        out.append(best)
        coeffs.append(coeff)
    if input_coeffs is not None:
        input_coeffs.append(np.concatenate(coeffs))
    return np.concatenate(out)


__all__ = ["MODES", "cached_difference_graph", "difference_bounds", "row_lower_bounds", "refined_bounds"]
