"""Input domains for branch and bound: real boxes, or integer codes when the input is snapped.

When the network's input goes straight into a quantizer (a shared input snap, as in QEBVerif's
twins), splitting real boxes never settles a box that straddles a rounding tie. Branching over
the integer codes instead is complete: leaves are single grid points.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vnncomp_qeb.analysis.exact import annotate_exact
from vnncomp_qeb.ir.float_error import ROUND_ABS, round_rel
from vnncomp_qeb.ir.grid import is_pow2
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.fuse import normalise
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.spec import Case


class RealDomain:
    """Boxes of the original input. A box whose side spans several codes of a quantizer that
    reads that input is cut at the rounding tie between them (leaves become single codes);
    otherwise the side with the highest score (or the widest, relative to the case's box) is
    bisected on the input's float grid — disjoint halves ``[lo, m]`` and ``[next(m), hi]`` —
    so that a box straddling a discontinuity ends as single floats, which are decided exactly.
    Only floats of ``input_type`` inside the box are inputs: the harness feeds onnxruntime no
    other values."""

    quantizer = None  # InputQuantizers of the real input, if any
    input_type = np.float32

    def __init__(self, graph: Graph, input_type: type = np.float32):
        self.graph = graph
        self.input_type = np.dtype(input_type).type
        self._normalised = self.analysis_graph = normalise(graph)
        self.quantizer = input_quantizers(graph)

    def initial(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """The case's box (its sides narrowed to the floats inside them); the analysis graph
        learns which roundings are exact over it."""
        self.width0 = np.where(case.upper > case.lower, case.upper - case.lower, 1.0)
        self.analysis_graph = annotate_exact(self._normalised, None, case.lower, case.upper)
        lo, hi = _float_inside(case.lower, case.upper, self.input_type)
        return lo[None], hi[None]

    def split(self, L: np.ndarray, U: np.ndarray, score: np.ndarray | None = None):
        """Cut each box in two: at a rounding tie of an input spanning several codes, else
        along the input with the highest ``score`` (B, n), or the widest relative to the case's
        box where no score is positive."""
        dim = _split_dims(L, U, self._reference_width(L), score)
        rows = np.arange(L.shape[0])
        left_hi, right_lo = self._cut(L[rows, dim], U[rows, dim])
        if self.quantizer is not None:
            span = self.quantizer.span(L, U)  # (B, n) codes spanned beyond one
            tie_rows = span.max(axis=1) > 0
            if tie_rows.any():
                qdim = np.argmax(np.where(span > 0, np.maximum(score, 0) + span if score is not None else span, -1),
                                 axis=1)[tie_rows]
                dim = dim.copy()
                dim[tie_rows] = qdim
                r = rows[tie_rows]
                a, b = self.quantizer.tie_cut(L[r, qdim], U[r, qdim], qdim, self.input_type)
                left_hi, right_lo = left_hi.copy(), right_lo.copy()
                left_hi[tie_rows], right_lo[tie_rows] = a, b
        U_left, L_right = U.copy(), L.copy()
        U_left[rows, dim], L_right[rows, dim] = left_hi, right_lo
        return np.vstack([L, L_right]), np.vstack([U_left, U])

    def _reference_width(self, L: np.ndarray) -> np.ndarray:
        return self.width0

    def _cut(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(upper end of the left half, lower end of the right half) of [lo, hi]: disjoint on
        the float grid (adjacent floats become two single points)."""
        mid = (lo + hi) / 2
        m = _float_at_most(mid, self.input_type)
        m = np.maximum(m, lo)
        right = np.minimum(np.nextafter(m.astype(self.input_type), self.input_type(np.inf)).astype(np.float64), hi)
        return m, np.maximum(right, m)

    def to_input(self, points: np.ndarray, case: Case) -> np.ndarray:
        return points

    def from_input(self, x: np.ndarray) -> np.ndarray:
        """Domain coordinates of input points (the inverse of :meth:`to_input` on the grid)."""
        return np.asarray(x, dtype=np.float64)


def _float_at_most(x: np.ndarray, t: type) -> np.ndarray:
    """The largest float of type ``t`` not above ``x`` (as float64)."""
    with np.errstate(over="ignore"):
        f = np.asarray(x, dtype=np.float64).astype(t)
    f = np.where(f.astype(np.float64) > x, np.nextafter(f, t(-np.inf)), f)
    return f.astype(np.float64)


def _float_inside(lo: np.ndarray, hi: np.ndarray, t: type) -> tuple[np.ndarray, np.ndarray]:
    """``[lo, hi]`` narrowed to the floats of type ``t`` inside it (sides without one kept)."""
    with np.errstate(over="ignore"):
        a = np.asarray(lo, dtype=np.float64).astype(t)
    a = np.where(a.astype(np.float64) < lo, np.nextafter(a, t(np.inf)), a).astype(np.float64)
    b = _float_at_most(hi, t)
    keep = (a <= b) & np.isfinite(a) & np.isfinite(b)
    return np.where(keep, a, lo), np.where(keep, b, hi)


@dataclass
class InputQuantizers:
    """Per flat input element, the first quantizer that reads it (through moves only):
    ``code = clamp(round(x/scale) + zero, qmin, qmax)``; NaN scale where none does."""

    scale: np.ndarray
    zero: np.ndarray
    qmin: np.ndarray
    qmax: np.ndarray
    mode: np.ndarray

    def codes(self, x: np.ndarray) -> np.ndarray:
        """(B, n) codes of a batch of inputs (NaN where no quantizer reads the input)."""
        with np.errstate(invalid="ignore"):
            t = x / self.scale
        return np.clip(_round_modes(self.mode, t) + self.zero, self.qmin, self.qmax)

    def span(self, L: np.ndarray, U: np.ndarray) -> np.ndarray:
        """Codes beyond one that each side spans (0 where it is one code or unquantized)."""
        d = self.codes(U) - self.codes(L)
        return np.where(np.isfinite(d) & (U > L), d, 0.0)

    def tie_cut(self, lo, hi, dim, t: type) -> tuple[np.ndarray, np.ndarray]:
        """Cut [lo, hi] at the tie between the middle code ``k`` and ``k + 1``: the tie goes to
        the side whose code it rounds to."""
        s, z, mode = self.scale[dim], self.zero[dim], self.mode[dim]
        c_lo = np.clip(_round_modes(mode, lo / s) + z, self.qmin[dim], self.qmax[dim])
        c_hi = np.clip(_round_modes(mode, hi / s) + z, self.qmin[dim], self.qmax[dim])
        k = np.floor((c_lo + c_hi) / 2) - z  # the unclamped code below the cut
        tie = _float_at_most((k + 0.5) * s, t)
        down = _round_modes(mode, tie / s) <= k  # the tie itself gives the lower code
        nxt = np.nextafter(tie.astype(t), t(np.inf)).astype(np.float64)
        prv = np.nextafter(tie.astype(t), t(-np.inf)).astype(np.float64)
        left = np.clip(np.where(down, tie, prv), lo, hi)
        right = np.clip(np.where(down, nxt, tie), lo, hi)
        return left, np.maximum(right, left)


def _round_modes(mode: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``t`` rounded with each element's (last axis) own rounding mode."""
    out = np.empty_like(np.asarray(t, dtype=np.float64))
    for m in np.unique(mode):
        sel = mode == m
        out[..., sel] = ops.round_with(str(m), t[..., sel])
    return out


def input_quantizers(graph: Graph) -> InputQuantizers | None:
    """Which quantizer reads each input element (through Gather/Reshape only), if any does."""
    n = graph.input_size
    src = {graph.input_name: np.arange(n)}
    q = dict(scale=np.full(n, np.nan), zero=np.zeros(n), qmin=np.full(n, -np.inf), qmax=np.full(n, np.inf),
             mode=np.full(n, "", dtype=object))
    found = False
    for op in graph.ops:
        if not op.inputs or op.inputs[0] not in src:
            continue
        idx = src[op.inputs[0]]
        if isinstance(op, ops.Reshape):
            src[op.output] = idx
        elif isinstance(op, ops.Gather):
            src[op.output] = idx[op.indices]
        elif isinstance(op, ops.FakeQuant) and op.mode.startswith("half") and is_pow2(op.scale):
            shape = graph.shapes[op.inputs[0]]
            s = np.broadcast_to(np.asarray(op.scale, dtype=np.float64), shape).reshape(-1)
            z = np.broadcast_to(np.asarray(op.zero_point, dtype=np.float64), shape).reshape(-1)
            new = np.isnan(q["scale"][idx])
            target = idx[new]
            q["scale"][target], q["zero"][target] = s[new], z[new]
            q["qmin"][target], q["qmax"][target] = op.qmin, op.qmax
            q["mode"][target] = op.mode
            found = found or bool(new.any())
    if not found:
        return None
    q["mode"] = np.where(q["mode"] == "", "half_even", q["mode"]).astype(str)
    return InputQuantizers(**q)


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


def domain_for(graph: Graph, input_type: type = np.float32) -> RealDomain:
    """Code-space branching when the input is snapped, real boxes of floats of ``input_type``
    (what the harness feeds the model) otherwise."""
    snap = input_snap(graph)
    return CodeDomain(graph, snap) if snap is not None else RealDomain(graph, input_type)
