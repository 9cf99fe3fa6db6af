"""Linear bounds by back-substitution through the whole graph (CROWN / DeepPoly style).

A linear objective ``C·t`` on some tensor ``t`` is pushed backwards op by op to the input, each
op by its own rule (``back_substitute``: nonlinear ops through their linear relaxation), then
concretised over the input box. On a twin the objective can be the difference ``N − Q`` itself:
both branches are substituted into one linear function of the shared input, so their common part
cancels (the *joint* bound), which subtracting separately computed bounds of N and Q cannot do.

Batched over boxes: coefficient arrays are (B, rows, n_tensor). Every linear op contributes
its float rounding error as a constant, so bounds stay sound for onnxruntime's evaluation. Each
op's own ``back_substitute`` rule does the work (docs/design.md §4); this module walks the graph.
"""

from __future__ import annotations

import numpy as np

from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.ir.op_base import rowdot  # noqa: F401  (re-exported)
from vnncomp_qeb.numerics import TINY

Bounds = dict[str, tuple[np.ndarray, np.ndarray]]


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


class Relaxations:
    """Cache of the nonlinear ops' linear relaxations (flat, batched) for a set of bounds."""

    def __init__(self):
        self.cache: dict[int, tuple] = {}
        self.errors: dict[int, np.ndarray] = {}

    def affine_error(self, op: ops.Affine, bounds: Bounds) -> np.ndarray:
        """:func:`affine_error`, once per op (its input bounds are final before any
        back-substitution passes through it)."""
        if id(op) not in self.errors:
            self.errors[id(op)] = op.float_error(bounds)
        return self.errors[id(op)]

    def get(self, op: ops.Op, bounds: Bounds):
        if id(op) not in self.cache:
            lo, hi = bounds[op.inputs[0]]
            olo, ohi = bounds[op.output]
            self.cache[id(op)] = tuple(_flat(np.broadcast_to(v, lo.shape)) for v in op.relaxation(lo, hi, olo, ohi))
        return self.cache[id(op)]


class Context:
    """What an op's back-substitution rule may read besides the bounds: the graph (shapes) and
    the relaxation cache."""

    def __init__(self, graph: Graph, relaxations: Relaxations):
        self.graph, self.relaxations = graph, relaxations

    def index_maps(self, op: ops.Op) -> list[np.ndarray]:
        """For a data movement op, the flat source id of each output element, and the offsets of
        its inputs in the concatenated flat ids."""
        graph = self.graph
        sizes = [int(np.prod(graph.shapes[n], dtype=np.int64)) for n in op.inputs]
        offsets = np.cumsum([0] + sizes)
        ids = [np.arange(o, o + s, dtype=np.float64).reshape((1,) + graph.shapes[n])
               for o, s, n in zip(offsets, sizes, op.inputs)]
        out = op.forward(*ids).reshape(-1).astype(np.int64)
        return [out, offsets]


def linear_bounds(graph: Graph, bounds: Bounds, relaxations: Relaxations, target: str,
                  C: np.ndarray, input_coeffs: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (B, rows) of ``C·flat(target)`` over the input box in ``bounds``.
    ``bounds`` must hold interval bounds of every tensor the target depends on. With
    ``input_coeffs`` (a list), the bounds' coefficients on the input are appended to it as one
    (B, 2·rows, n) array, lower-bound rows first then the negated upper-bound rows: how much each
    input's width contributes to each bound (the split heuristic's score)."""
    B = bounds[graph.input_name][0].shape[0]
    rows = C.shape[0]
    lam: dict[str, np.ndarray] = {target: np.broadcast_to(np.concatenate([C, -C])[None], (B, 2 * rows,
                                                                                         C.shape[1])).copy()}
    const = np.zeros((B, 2 * rows))
    needed = graph.ancestors(target)
    leaves = input_leaves(graph)
    value = np.zeros_like(const)  # concretised parts; const keeps the relaxations' offsets
    leaf_coeffs: list[np.ndarray] = []  # leaves are elementwise in the input: same flat size
    ctx = Context(graph, relaxations)
    for op in reversed(graph.ops):
        if op.output not in needed or op.output not in lam:
            continue
        L = lam.pop(op.output)
        if op.output in leaves:  # concretise here: the leaf's box is its exact reachable set
            value = value + _concretise(L, bounds[op.output])
            leaf_coeffs.append(L)
            continue
        for name, coeff in op.back_substitute(L, bounds, const, ctx):
            lam[name] = lam[name] + coeff if name in lam else coeff
    if graph.input_name in lam:
        leaf_coeffs.append(lam[graph.input_name])
        value = value + _concretise(lam.pop(graph.input_name), bounds[graph.input_name])
    if input_coeffs is not None:
        input_coeffs.append(sum(leaf_coeffs) if leaf_coeffs else np.zeros((B, 2 * rows, graph.input_size)))
    value = value + const
    value = value - 1e-12 * np.abs(value) - TINY  # our own float64 arithmetic
    return value[:, :rows], -value[:, rows:]


def _concretise(L: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Lower bound of ``L·t`` over the box of t, minus a margin for our own rounding."""
    lo, hi = _flat(box[0]), _flat(box[1])
    Lp = np.maximum(L, 0)
    value = rowdot(Lp, lo) + rowdot(L - Lp, hi)
    scale = rowdot(np.abs(L), np.maximum(np.abs(lo), np.abs(hi)))
    return value - 1e-12 * scale




def exact_by_intervals(graph: Graph) -> set[str]:
    """Tensors whose interval bounds back-substitution cannot improve: the input, input snaps,
    and affine maps of those (an affine map of a box attains its interval bounds), also
    through ops that only add a rounding-error term (``adds_error_only``)."""
    exact = {graph.input_name} | input_leaves(graph)
    for op in graph.ops:
        if (isinstance(op, ops.Affine) or getattr(op, "adds_error_only", False)) and op.inputs[0] in exact:
            exact.add(op.output)
    return exact


def input_leaves(graph: Graph) -> set[str]:
    """Tensors computed elementwise from the input alone (an input snap): their interval box is
    exactly the set of values they can take, so back-substitution stops there instead of
    relaxing them (a rounding band would widen the box by half a step)."""
    if not hasattr(graph, "_leaves"):
        graph._leaves = {op.output for op in graph.ops
                         if isinstance(op, ops.Clamp) and op.inputs == (graph.input_name,)}
    return graph._leaves
