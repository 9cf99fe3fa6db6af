"""The IR as a mixed-integer program over one input box.

Every tensor element becomes a column whose bounds come from the (sound) refined bounds of the
DRA. Linear ops are equality rows; ReLU / Clip are clamps with a binary per side that can
saturate (stable neurons get none); every rounding step gets an integer column ``r`` with
``t − r`` in the rounding band of ``t = x/s``, then a clamp to the quantizer's range.

Two variants (docs/design.md §3.2):
- ``proof``: the band is widened by the tie/float32 allowance of :mod:`vnncomp_qeb.analysis.interval`
  and every linear row has the op's rounding-error slack, so the model contains everything
  onnxruntime can compute: its dual bound is a bound on the real network.
- ``witness``: exact rows, and the band is narrowed by ``δ`` so a point never sits on a tie: the
  input it returns reproduces (up to float32) in onnxruntime, which replays it before any ``sat``.
  Where a rounding's input is computed exactly (``exact_step``) the exact band is kept: it breaks
  ties as onnxruntime does, and on fixed-point twins ties are common, not an accident.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vnncomp_qeb.analysis.backsub import Bounds
from vnncomp_qeb.ir.float_error import rounding_band
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.milp.model import MilpModel

PROOF, WITNESS = "proof", "witness"
WITNESS_DELTA = 1e-3  # band narrowing of the witness model, in integer steps
STAIR_MAX = 256  # staircase hull cuts for rounding steps with at most this many values (8 bits)
EDGE_MAX = 1e4  # ... and edges no steeper than this × (value range / input range)


@dataclass
class Encoding:
    """A model with the columns of every tensor (arrays of column indices, per-sample shape)."""

    model: MilpModel
    columns: dict[str, np.ndarray]
    graph: Graph
    mode: str
    n_binaries: int = 0
    n_stair_cuts: int = 0

    @property
    def inputs(self) -> np.ndarray:
        return self.columns[self.graph.input_name].ravel()

    @property
    def outputs(self) -> np.ndarray:
        return np.concatenate([self.columns[o].ravel() for o in self.graph.outputs])


@dataclass
class Cut:
    """Rows ``lo ≤ Σ_k coefs[k]·tensors[k] ≤ hi`` elementwise over equally sized tensors
    (coefficients and sides scalars or flat arrays)."""

    tensors: tuple[str, ...]
    coefs: tuple
    lo: object = -np.inf
    hi: object = np.inf


def _flat(b: np.ndarray) -> np.ndarray:
    return np.asarray(b, dtype=np.float64).reshape(-1)


class _Encoder:
    def __init__(self, graph: Graph, bounds: Bounds, mode: str):
        self.g, self.bounds, self.mode = graph, bounds, mode
        self.m = MilpModel()
        self.cols: dict[str, np.ndarray] = {}
        self.binaries = 0
        self.stair_cuts = 0

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.g.shapes[name]) if name != self.g.input_name else tuple(self.g.input_shape)

    def lohi(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.bounds[name]
        return _flat(lo[0]), _flat(hi[0])

    def slack(self, err: np.ndarray) -> np.ndarray:
        return err if self.mode == PROOF else np.zeros_like(err)

    def fresh(self, name: str) -> np.ndarray:
        lo, hi = self.lohi(name)
        return self.m.add_vars(lo, np.maximum(hi, lo))

    def linear(self, op: ops.Op, terms: list[tuple[np.ndarray, np.ndarray]], const, err) -> np.ndarray:
        """Column y with ``y − Σ coef·x = const ± err`` (terms: (cols (n, k), coefs (n, k)))."""
        y = self.fresh(op.output)
        cols = np.concatenate([y[:, None]] + [c for c, _ in terms], axis=1)
        vals = np.concatenate([np.ones((y.size, 1))] + [-v for _, v in terms], axis=1)
        const = np.broadcast_to(np.asarray(const, dtype=np.float64), y.shape)
        e = self.slack(np.broadcast_to(err, y.shape))
        self.m.add_rows(cols, vals, const - e, const + e)
        return y

    def encode(self, op: ops.Op) -> np.ndarray:
        """The output columns of ``op``: the op's own ``milp_rows`` rule."""
        return op.milp_rows(self, [self.cols[n].ravel() for n in op.inputs])

    def rounding(self, op: ops.Op, x: np.ndarray) -> np.ndarray:
        """Columns of the clamped integer code ``clamp(round(x/s), a, b)`` of a rounding op."""
        s, a, b, _ = op.clamp_params()
        n = x.size
        shape = self.shape(op.inputs[0])
        s = _flat(np.broadcast_to(np.asarray(s, dtype=np.float64), shape))
        a = _flat(np.broadcast_to(np.asarray(a, dtype=np.float64), shape))
        b = _flat(np.broadcast_to(np.asarray(b, dtype=np.float64), shape))
        xl, xu = self.lohi(op.inputs[0])
        tl, tu = xl / s, xu / s
        # r = round(t)  ⇔  r − t ∈ [−h_lo, h_hi]: the proof band (widened, or exact), or the
        # witness band narrowed by δ so that no point sits on a tie — unless t is computed
        # exactly on a grid (``exact_step``): then the exact band already breaks ties as
        # onnxruntime does, and narrowing it would cut off every point with a tie (on a grid of
        # step 1/8 nearly every point of a 100-neuron layer)
        h_lo, h_hi = rounding_band(op, np.maximum(np.abs(tl), np.abs(tu)))
        h_lo, h_hi = np.broadcast_to(h_lo, (n,)), np.broadcast_to(h_hi, (n,))
        rl = np.ceil(tl - h_lo)
        ru = np.maximum(np.floor(tu + h_hi), rl)
        if self.mode == WITNESS and getattr(op, "exact_step", None) is None:
            h_lo, h_hi = np.maximum(h_lo - WITNESS_DELTA, 0.0), np.maximum(h_hi - WITNESS_DELTA, 0.0)
        r = self.m.add_vars(rl, ru, integer=True)
        self.m.add_rows(np.stack([x, r], axis=1), np.stack([1.0 / s, -np.ones(n)], axis=1), -h_hi, h_lo)
        q = self.clamp(r, rl, ru, a, b)
        self.staircase_cuts(x, q, s, xl, xu, rl, ru, a, b, h_lo, h_hi)
        return q

    def staircase_cuts(self, x, q, s, xl, xu, rl, ru, a, b, h_lo, h_hi) -> None:
        """Facets of the convex hull of the staircase ``q = clamp(r, a, b)``, ``r`` an integer
        with ``r − x/s`` in the band, over ``[xl, xu]``: the first edge of the upper hull (out of
        the left end) and of the lower hull (into the right end). They are implied by the rows
        above (so sound whatever the mode), but the LP relaxation of the band and the clamp's
        big-M misses them. The hull's other edges are the band's own lines or steeper, and added
        nothing to the LP bound on the MNIST twins (measured), so only these two are kept.
        Neurons with more than ``STAIR_MAX`` values are left alone."""
        k_n = (ru - rl).astype(np.int64)
        keep = np.flatnonzero((s > 0) & (k_n >= 1) & (k_n <= STAIR_MAX) & (xu > xl))
        if keep.size == 0:
            return
        x, q, s, xl, xu, rl, a, b, h_lo, h_hi = (v[keep] for v in (x, q, s, xl, xu, rl, a, b, h_lo, h_hi))
        r = rl[:, None] + np.arange(int(k_n[keep].max()) + 1)
        v = np.clip(r, a[:, None], b[:, None])
        # each value's segment of x, clipped to the box; the hull is that of the segments' ends
        start = np.maximum(s[:, None] * (r - h_hi[:, None]), xl[:, None])
        end = np.minimum(s[:, None] * (r + h_lo[:, None]), xu[:, None])
        real = (r <= (rl + k_n[keep])[:, None]) & (start <= end)
        px = np.concatenate([start, end], axis=1)
        pv = np.concatenate([v, v], axis=1).astype(np.float64)
        real = np.concatenate([real, real], axis=1)
        span = np.where(real, pv, np.nan)
        steep = EDGE_MAX * (np.nanmax(span, 1) - np.nanmin(span, 1)) / (xu - xl)
        for upper in (True, False):
            sigma, c = _first_hull_edge(px, pv, real, upper)
            k = np.flatnonzero(np.isfinite(sigma) & (sigma > 0) & (sigma < steep))
            if k.size == 0:
                continue
            cols = np.stack([q[k], x[k]], 1)
            vals = np.stack([np.ones(k.size), -sigma[k]], 1)
            bound = c[k] + (1 if upper else -1) * 1e-9 * (1 + np.abs(c[k]))
            inf = np.full(k.size, np.inf)
            self.m.add_rows(cols, vals, -inf if upper else bound, bound if upper else inf)
            self.stair_cuts += k.size

    def clamp(self, x: np.ndarray, l: np.ndarray, u: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Columns y = clamp(x, a, b) given l ≤ x ≤ u; binaries only where a side can saturate."""
        y = x.copy()
        low, high = u <= a, l >= b
        if low.any() or high.any():
            fixed = low | high
            v = np.where(low, a, b)[fixed]
            y[fixed] = self.m.add_vars(v, v)
        free = ~low & ~high & ((l < a) | (u > b))
        if not free.any():
            return y
        idx = np.flatnonzero(free)
        xf, lf, uf, af, bf = x[idx], l[idx], u[idx], a[idx], b[idx]
        ymin, ymax = np.maximum(af, lf), np.minimum(bf, uf)
        yf = self.m.add_vars(ymin, ymax)
        y[idx] = yf
        sat_lo, sat_hi = lf < af, uf > bf
        m = idx.size
        za = np.full(m, -1)
        zb = np.full(m, -1)
        if sat_lo.any():
            za[sat_lo] = self.m.add_vars(np.zeros(sat_lo.sum()), 1.0, integer=True)
        if sat_hi.any():
            zb[sat_hi] = self.m.add_vars(np.zeros(sat_hi.sum()), 1.0, integer=True)
        self.binaries += int(sat_lo.sum() + sat_hi.sum())
        zero = np.zeros(m)
        # y ≤ x + (a − l)·za  (za = 0: y ≤ x)
        self.m.add_rows(np.stack([yf, xf, za], 1), np.stack([np.ones(m), -np.ones(m), np.where(sat_lo, -(af - lf), 0)], 1),
                        -np.inf, zero)
        # y ≥ x − (u − b)·zb  (zb = 0: y ≥ x)
        self.m.add_rows(np.stack([yf, xf, zb], 1), np.stack([np.ones(m), -np.ones(m), np.where(sat_hi, uf - bf, 0)], 1),
                        zero, np.inf)
        if sat_lo.any():  # za = 1 ⇒ y ≤ a
            k = np.flatnonzero(sat_lo)
            self.m.add_rows(np.stack([yf[k], za[k]], 1), np.stack([np.ones(k.size), ymax[k] - af[k]], 1), -np.inf, ymax[k])
        if sat_hi.any():  # zb = 1 ⇒ y ≥ b
            k = np.flatnonzero(sat_hi)
            self.m.add_rows(np.stack([yf[k], zb[k]], 1), np.stack([np.ones(k.size), -(bf[k] - ymin[k])], 1), ymin[k], np.inf)
        both = sat_lo & sat_hi
        if both.any():
            k = np.flatnonzero(both)
            self.m.add_rows(np.stack([za[k], zb[k]], 1), np.ones((k.size, 2)), -np.inf, 1.0)
        return y


def _first_hull_edge(px: np.ndarray, pv: np.ndarray, real: np.ndarray, upper: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first edge of the upper (concave) hull of the points ``(px, pv)`` where
    ``real``, out of its highest leftmost point — or of the lower (convex) hull into its lowest
    rightmost point — as the line ``v = σ·x + c`` (σ = −inf where the row has no edge). The
    first edge is the steepest line from that point to any other."""
    sign = 1.0 if upper else -1.0  # the lower hull is the upper hull of (−x, −v)
    X, V = np.where(real, sign * px, np.inf), sign * pv
    x0 = X.min(1)
    v0 = np.where(real & (X == x0[:, None]), V, -np.inf).max(1)
    dx = X - x0[:, None]
    right = real & (dx > 0)
    sigma = np.where(right, (V - v0[:, None]) / np.where(right, dx, 1.0), -np.inf).max(1)
    # v' ≤ σ·x' + (v0 − σ·x0) in the mirrored frame, i.e. v ≤ σ·x + c (upper) or v ≥ σ·x + c (lower)
    return sigma, sign * (v0 - sigma * x0)


def encode(graph: Graph, bounds: Bounds, mode: str = PROOF, integer_input: bool = False,
           cuts: list[Cut] = ()) -> Encoding:
    """Encode ``graph`` over the box in ``bounds[graph.input_name]`` (one box: arrays (1, ...)).

    ``bounds`` must be sound bounds of every tensor (e.g. :func:`vnncomp_qeb.analysis.dra.refined_bounds`).
    ``integer_input`` makes the input columns integer (code-space inputs of a snapped twin).
    ``cuts`` are linear relations between tensors (the DRA's hidden difference relations); they
    must hold on every point of the box, i.e. be computed from the same or a larger box.
    """
    enc = _Encoder(graph, bounds, mode)
    lo, hi = enc.lohi(graph.input_name)
    if integer_input:
        lo, hi = np.ceil(lo - 1e-9), np.floor(hi + 1e-9)
    enc.cols[graph.input_name] = enc.m.add_vars(lo, hi, integer=integer_input)
    for op in graph.ops:
        enc.cols[op.output] = np.asarray(enc.encode(op)).ravel()
    for cut in cuts:
        cols = [enc.cols[t] for t in cut.tensors]
        n = cols[0].size
        vals = [np.broadcast_to(_flat(c), (n,)) for c in cut.coefs]
        enc.m.add_rows(np.stack(cols, 1), np.stack(vals, 1), np.broadcast_to(_flat(cut.lo), (n,)),
                       np.broadcast_to(_flat(cut.hi), (n,)))
    return Encoding(enc.m, enc.cols, graph, mode, enc.binaries, enc.stair_cuts)
