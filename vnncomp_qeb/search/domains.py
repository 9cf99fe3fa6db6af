"""Input domains for branch and bound: real boxes, or integer codes when the input is snapped.

When the network's input goes straight into a quantizer (a shared input snap, as in QEBVerif's
twins), splitting real boxes never settles a box that straddles a rounding tie. Branching over
the integer codes instead is complete: leaves are single grid points.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vnncomp_qeb.analysis.exact import annotate_exact
from vnncomp_qeb.analysis.interval import ROUND_ABS, round_rel
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.fuse import normalise
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.spec import Case


class RealDomain:
    """Boxes of the original input; bisect the widest side (relative to the case's box)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._normalised = self.analysis_graph = normalise(graph)

    def initial(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """The case's box; the analysis graph learns which roundings are exact over it."""
        self.width0 = np.where(case.upper > case.lower, case.upper - case.lower, 1.0)
        self.analysis_graph = annotate_exact(self._normalised, None, case.lower, case.upper)
        return case.lower[None].copy(), case.upper[None].copy()

    def split(self, L: np.ndarray, U: np.ndarray, score: np.ndarray | None = None):
        """Bisect each box along the input with the highest ``score`` (B, n), or the widest
        relative to the case's box where no score is positive."""
        dim = _split_dims(L, U, self._reference_width(L), score)
        rows = np.arange(L.shape[0])
        U_left, L_right = U.copy(), L.copy()
        U_left[rows, dim], L_right[rows, dim] = self._cut(L[rows, dim], U[rows, dim])
        return np.vstack([L, L_right]), np.vstack([U_left, U])

    def _reference_width(self, L: np.ndarray) -> np.ndarray:
        return self.width0

    def _cut(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(upper end of the left half, lower end of the right half) of [lo, hi]."""
        mid = (lo + hi) / 2
        return mid, mid

    def to_input(self, points: np.ndarray, case: Case) -> np.ndarray:
        return points

    def from_input(self, x: np.ndarray) -> np.ndarray:
        """Domain coordinates of input points (the inverse of :meth:`to_input` on the grid)."""
        return np.asarray(x, dtype=np.float64)


@dataclass
class Snap:
    """How the graph snaps its input: ``code = clamp(round(x/scale) + zero, qmin, qmax)`` (rounding
    ``mode``, computed in ``precision``), the tensor ``output`` holding ``out_scale·(code − zero)``,
    computed by the graph's ``ops`` (replaced by the codes in code space)."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: float
    qmax: float
    mode: str
    precision: str
    output: str
    out_scale: np.ndarray
    ops: tuple = ()


class CodeDomain(RealDomain):
    """Boxes of integer codes ``c`` of the input snap; the graph starts from ``out_scale·(c − z)``."""

    def __init__(self, graph: Graph, snap: Snap):
        self.snap = snap
        flat = graph.input_size
        self.scale = np.broadcast_to(snap.scale, graph.input_shape).reshape(flat)
        self.zero = np.broadcast_to(snap.zero_point, graph.input_shape).reshape(flat)
        first = ops.AddConst((graph.input_name,), graph.input_name + "__centred",
                             c=-np.asarray(snap.zero_point, dtype=np.float64), precision=snap.precision)
        second = ops.MulConst((first.output,), snap.output, c=np.asarray(snap.out_scale, dtype=np.float64),
                              precision=snap.precision)
        rest = [op for op in graph.ops if not any(op is o for o in snap.ops)]
        self._code_graph = replace(graph, ops=[first, second] + rest, shapes={})
        # codes are integers in [qmin, qmax]: mark the rounding steps onnxruntime computes exactly
        # (an unclamped snap: over the box's codes, once :meth:`initial` knows them)
        if np.isfinite(snap.qmin) and np.isfinite(snap.qmax):
            self._annotate(np.full(flat, float(snap.qmin)), np.full(flat, float(snap.qmax)))
        else:
            self.graph, self.analysis_graph = self._code_graph, normalise(self._code_graph)

    def _annotate(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.graph = annotate_exact(self._code_graph, 1.0, lo, hi)
        self.analysis_graph = annotate_exact(normalise(self._code_graph), 1.0, lo, hi)

    def initial(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """Every code the box can reach, ties and float32 division error included."""
        lo, hi = case.lower / self.scale, case.upper / self.scale
        lo = lo - (np.abs(lo) * round_rel(self.snap) + ROUND_ABS)
        hi = hi + (np.abs(hi) * round_rel(self.snap) + ROUND_ABS)
        c_lo = np.clip(ops.round_with(self.snap.mode, lo) + self.zero, self.snap.qmin, self.snap.qmax)
        c_hi = np.clip(ops.round_with(self.snap.mode, hi) + self.zero, self.snap.qmin, self.snap.qmax)
        self.width0 = np.maximum(c_hi - c_lo, 1.0)
        if not (np.isfinite(self.snap.qmin) and np.isfinite(self.snap.qmax)):  # unclamped snap: the box's codes
            self._annotate(c_lo, c_hi)
        return c_lo[None], c_hi[None]

    def _reference_width(self, L: np.ndarray) -> np.ndarray:
        return np.ones(L.shape[1])  # codes: the widest side in codes

    def _cut(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes split in two disjoint integer ranges."""
        mid = np.floor((lo + hi) / 2)
        return mid, mid + 1

    def to_input(self, points: np.ndarray, case: Case) -> np.ndarray:
        """The grid point of each code (rounded codes for box centres), clipped into the box."""
        codes = np.round(points)
        return np.clip(self.scale * (codes - self.zero), case.lower, case.upper)


    def from_input(self, x: np.ndarray) -> np.ndarray:
        """The code the input quantizer gives each input."""
        codes = ops.round_with(self.snap.mode, np.asarray(x, dtype=np.float64) / self.scale) + self.zero
        return np.clip(codes, self.snap.qmin, self.snap.qmax)


def _split_dims(L: np.ndarray, U: np.ndarray, width0: np.ndarray, score: np.ndarray | None) -> np.ndarray:
    """Per box, the input to split: the highest positive score among inputs that can still be
    split, else the widest relative to ``width0``."""
    wide = np.argmax((U - L) / width0, axis=1)
    if score is None:
        return wide
    score = np.where(U > L, score, -1.0)
    best = np.argmax(score, axis=1)
    return np.where(score[np.arange(L.shape[0]), best] > 0, best, wide)


def input_snap(graph: Graph) -> Snap | None:
    """How the graph snaps its input to a grid, if every use of the input goes through one snap:
    a quantizer (QuantizeLinear, a fused fake-quant chain), or ``Round(x·k)`` /
    ``Floor(x·k + 0.5)`` of a positive scaling (an integer-valued code, as fixed-point twins write
    it in float32 or float64)."""
    readers = graph.consumers()
    first = readers.get(graph.input_name, [])
    if len(first) != 1:
        return None
    op = first[0]
    if isinstance(op, ops.FakeQuant):
        return Snap(op.scale, op.zero_point, op.qmin, op.qmax, op.mode, op.precision, op.output, op.scale, (op,))
    if type(op) is not ops.MulConst or op.divide or np.any(np.asarray(op.c) <= 0) or op.output in graph.outputs:
        return None
    nxt = readers.get(op.output, [])
    chain = [op]
    if len(nxt) == 1 and isinstance(nxt[0], ops.Round) and nxt[0].mode in ("half_even", "half_up", "half_away"):
        chain.append(nxt[0])
        mode = nxt[0].mode
    elif (len(nxt) == 1 and type(nxt[0]) is ops.AddConst and np.all(np.asarray(nxt[0].c) == 0.5)
          and len(readers.get(nxt[0].output, [])) == 1 and isinstance(readers[nxt[0].output][0], ops.Round)
          and readers[nxt[0].output][0].mode == "floor"):
        chain += [nxt[0], readers[nxt[0].output][0]]
        mode = "half_up"
    else:
        return None
    k = np.asarray(op.c, dtype=np.float64)
    precision = ops.coarsest(*(o.precision for o in chain))
    return Snap(1.0 / k, np.float64(0.0), -np.inf, np.inf, mode, precision, chain[-1].output, np.float64(1.0),
                tuple(chain))


def domain_for(graph: Graph) -> RealDomain:
    """Code-space branching when the input is snapped, real boxes otherwise."""
    snap = input_snap(graph)
    return CodeDomain(graph, snap) if snap is not None else RealDomain(graph)
