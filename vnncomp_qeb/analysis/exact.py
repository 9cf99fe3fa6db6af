"""Which tensors onnxruntime computes *exactly*, and on which power-of-two grid.

In a fixed-point network fed integer codes (QEBVerif's float64 twins; power-of-two QDQ models),
every value is a dyadic rational with few bits: sums and products are exact in the op's float
type, so a value that feeds a rounding step lies
on a known grid ``g·Z`` and a tie is rounded the one way the mode says. The rounding band then
shrinks from the widened ``[−0.5 − w, 0.5 + w]`` to e.g. ``[−0.5 + g, 0.5]`` (round half up),
which tightens every bound downstream (:func:`vnncomp_qeb.analysis.interval.rounding_band`).

The analysis is static: it runs once per graph over the whole range of the input codes, so the
magnitude condition (no partial sum needs more than 52 bits on its grid) holds for every box.
Anything not provably exact keeps ``exact_step = None`` and the widened band.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vnncomp_qeb.analysis.interval import interval_bounds
from vnncomp_qeb.numerics import SUBNORMAL
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph

# |value| / grid at most this: every partial sum is representable in the op's float type
MAX_RATIO = {"float64": 2.0**52, "float32": 2.0**23, "float16": 2.0**10, "bfloat16": 2.0**7}
# the step of a tensor that holds the real input's own floating-point values, moved but never
# computed: on no uniform grid, but every value is a float of its type (what onnxruntime is fed)
FLOAT_VALUES = 0.0


def dyadic_step(v) -> float | None:
    """The largest power of two ``2^k`` with every element of ``v`` in ``2^k·Z`` (+inf when all are
    zero), or None when some element is not finite."""
    v = np.abs(np.asarray(v, dtype=np.float64)).ravel()
    if not np.all(np.isfinite(v)):
        return None
    v = v[v != 0]
    if v.size == 0:
        return np.inf
    m, e = np.frexp(v)  # v = m·2^e, m ∈ [0.5, 1): 53-bit integer mantissa m·2^53
    mant = np.ldexp(m, 53).astype(np.int64)
    low = mant & -mant  # lowest set bit
    tz = np.frexp(low.astype(np.float64))[1] - 1
    return float(2.0 ** int(np.min(e - 53 + tz)))


def is_pow2(v) -> bool:
    """Every element a power of two in magnitude (division by it is exact)."""
    v = np.abs(np.asarray(v, dtype=np.float64)).ravel()
    return bool(np.all(v > 0) and np.all(np.frexp(v)[0] == 0.5))


def _mag(bounds, name) -> float:
    lo, hi = bounds[name]
    return float(np.max(np.maximum(np.abs(lo), np.abs(hi)))) if lo.size else 0.0


def _fits(step: float | None, mag: float, precision: str) -> float | None:
    if step is None or step == FLOAT_VALUES or np.isnan(step) or not np.isfinite(mag):
        return None
    if not np.isfinite(step):
        return step
    return step if mag / step <= MAX_RATIO[precision] else None


def _step(op: ops.Op, st: list, bounds) -> float | None:
    """Grid step of the op's output, or None when it is not computed exactly."""
    if isinstance(op, ops.Round):  # an integer whatever its input was
        return 1.0
    if isinstance(op, ops.FakeQuant):  # s·q with q an integer code
        ss = dyadic_step(op.scale)
        return None if ss is None else _fits(ss, _mag(bounds, op.output), op.precision)
    if any(s is None for s in st) or op.slack or np.any(np.asarray(op.slack_abs) != 0):
        return None  # inexact inputs, or constants onnxruntime derives with rounding
    if isinstance(op, (ops.Reshape, ops.Gather, ops.Relu)):
        return st[0]
    if isinstance(op, ops.Concat):
        return min(st)
    out_mag = _mag(bounds, op.output)
    p = op.precision
    if isinstance(op, ops.Affine):
        sw = dyadic_step(op.weights())
        sb = np.inf if op.b is None else dyadic_step(op.b)
        if sw is None or sb is None:
            return None
        lo, hi = bounds[op.inputs[0]]
        mag_in = np.maximum(np.abs(lo), np.abs(hi)).reshape(lo.shape[0], -1)
        partial = float(np.max(mag_in @ np.abs(op.W) + (0 if op.b is None else np.abs(op.b)), initial=0.0))
        return _fits(min(st[0] * sw, sb), partial, p)
    if isinstance(op, ops.AddConst):
        sc = dyadic_step(op.c)
        return None if sc is None else _fits(min(st[0], sc), max(out_mag, _mag(bounds, op.inputs[0])), p)
    if isinstance(op, ops.MulConst):
        if op.divide:
            return _fits(st[0] / float(np.max(np.abs(op.c))), out_mag, p) if is_pow2(op.c) else None
        sc = dyadic_step(op.c)
        return None if sc is None else _fits(st[0] * sc, out_mag, p)
    if isinstance(op, (ops.Add, ops.Sub)):
        return _fits(min(st), max(out_mag, _mag(bounds, op.inputs[0]), _mag(bounds, op.inputs[1])), p)
    if isinstance(op, ops.Clip):
        ends = [dyadic_step(v) for v in (op.lo, op.hi) if np.isfinite(v)]
        return None if any(e is None for e in ends) else min([st[0]] + ends)
    return None


def _t_step(op: ops.Op, x_step: float | None, x_mag: float) -> float | None:
    """Grid of what the rounding step rounds (x for Round, x/s for FakeQuant), if exact."""
    if x_step is None:
        return None
    if x_step == FLOAT_VALUES:
        # the input's own floats: rounded as they are, or divided by a power of two — exact
        # either way, on the grid of the type's smallest float
        if isinstance(op, ops.Round):
            return SUBNORMAL[op.precision]
        return SUBNORMAL[op.precision] / float(np.max(np.abs(op.scale))) if is_pow2(op.scale) else None
    if isinstance(op, ops.Round):
        return _fits(x_step, x_mag, op.precision)
    if not is_pow2(op.scale):
        return None
    s_max = float(np.max(np.abs(op.scale)))
    return _fits(x_step / s_max, x_mag / float(np.min(np.abs(op.scale))), op.precision)


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
        if isinstance(op, (ops.Round, ops.FakeQuant)):
            t = _t_step(op, st[0], _mag(bounds, op.inputs[0]))
            if t is not None and np.isfinite(t):
                op = replace(op, exact_step=t)
        new_ops.append(op)
        steps[op.output] = _step(op, st, bounds)
    return replace(graph, ops=new_ops, shapes=dict(graph.shapes))
