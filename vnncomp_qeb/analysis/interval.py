"""Interval bound propagation over the IR, batched over boxes, sound for floating-point execution.

Every bound encloses both the exact real value and what onnxruntime computes in the type each
op runs in (``op.precision``): arithmetic ops are widened by the standard rounding-error bound
(γ_n = n·u for an n-term dot product, u the unit roundoff, doubled to also cover our own float64
arithmetic), and every rounding step (FakeQuant, Round) is applied to an input interval widened
by a relative 4u and an absolute 1e-4 of an integer step, so ties and the fused kernels' float32
multiplier (docs/design.md §2.3) can round either way.
"""

from __future__ import annotations

import numpy as np

from vnncomp_qeb import numerics
from vnncomp_qeb.ir import ops
from vnncomp_qeb.numerics import TINY, TINY_OF, UNIT  # noqa: F401  (re-exported)
from vnncomp_qeb.ir.graph import Graph

U = UNIT["float32"]
ROUND_ABS = 1e-4  # in units of the integer grid: widened ties


def unit(op: ops.Op) -> float:
    """Relative rounding error of one arithmetic step of ``op`` (result stored in its type)."""
    return UNIT[op.precision]


def tiny(op: ops.Op) -> float:
    """Absolute rounding error near zero (subnormal spacing) of one result of ``op``."""
    return TINY_OF[op.precision]


def round_rel(op: ops.Op) -> float:
    """Relative error of the value an op rounds (a few steps of arithmetic before it)."""
    return 4 * UNIT[op.precision]


def dot_error(op: ops.Op, n_terms: int, mag, out_mag) -> np.ndarray:
    """Float error of an op's ``n_terms``-term dot product: :func:`vnncomp_qeb.numerics.dot_error`,
    plus the op's slack."""
    return numerics.dot_error(op.precision, n_terms, mag, out_mag) + _slack(op, mag)


def elementwise_error(op: ops.Op, mag) -> np.ndarray:
    """Float error of one elementwise arithmetic step of ``op`` whose result is at most ``mag``
    in magnitude (a cast: one rounding to its type), plus the op's slack."""
    if isinstance(op, ops.CastFloat):
        return op.error(mag)
    return unit(op) * np.asarray(mag) + tiny(op) + _slack(op, mag)


def _slack(op: ops.Op, mag) -> np.ndarray | float:
    """``slack·mag + slack_abs``, the absolute part laid out like ``mag`` (per sample, with or
    without a leading batch axis, flat or not)."""
    mag = np.asarray(mag)
    extra = op.slack * mag if op.slack else 0.0
    sa = np.asarray(op.slack_abs, dtype=np.float64)
    if sa.ndim and mag.ndim:
        sa = sa.reshape(mag.shape if sa.size == mag.size else mag.shape[1:])
    return extra + sa


# round(t) − t ∈ [−h_lo, h_hi] for each rounding mode (ties either way)
_BAND = {"half_even": (0.5, 0.5), "half_up": (0.5, 0.5), "half_away": (0.5, 0.5), "floor": (1.0, 0.0),
         "ceil": (0.0, 1.0), "toward_zero": (1.0, 1.0)}


def rounding_band(op: ops.Op, t_mag) -> tuple:
    """``(h_lo, h_hi)`` with ``round(t) − t ∈ [−h_lo, h_hi]`` for what onnxruntime computes,
    ``t_mag`` bounding |t|. Widened by the float error and the tie allowance, unless the op's
    input is computed exactly on a grid of step ``g`` (``op.exact_step``): then the band is the
    exact one, half-open sides closed by ``g`` (round half up: ``(−0.5, 0.5]`` → ``[−0.5 + g, 0.5]``)."""
    h_lo, h_hi = _BAND[op.mode]
    g = getattr(op, "exact_step", None)
    if g is None:
        w = np.asarray(t_mag) * round_rel(op) + ROUND_ABS
        return h_lo + w, h_hi + w
    g = min(g, 0.5)
    if op.mode == "half_up":
        return 0.5 - g, 0.5
    if op.mode == "floor":
        return 1.0 - g, 0.0
    if op.mode == "ceil":
        return 0.0, 1.0 - g
    if op.mode == "toward_zero":
        return 1.0 - g, 1.0 - g
    return h_lo, h_hi


def _widen(lo: np.ndarray, hi: np.ndarray, err: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    return lo - err, hi + err


def _mag(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(lo), np.abs(hi))


def _affine(op: ops.Affine, lo, hi):
    lo, hi = lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1)
    c = (lo + hi) / 2
    r = (hi - lo) / 2
    absW = np.abs(op.W)
    yc = c @ op.W
    yr = r @ absW
    mag = _mag(lo, hi) @ absW
    if op.b is not None:
        yc = yc + op.b
        mag = mag + np.abs(op.b)
    return _widen(yc - yr, yc + yr, dot_error(op, op.fan_in + op.extra_steps, mag, _mag(yc - yr, yc + yr)))


def _scale(op: ops.MulConst, lo, hi):
    a = lo / op.c if op.divide else lo * op.c
    b = hi / op.c if op.divide else hi * op.c
    out_lo, out_hi = np.minimum(a, b), np.maximum(a, b)
    return _widen(out_lo, out_hi, elementwise_error(op, _mag(out_lo, out_hi)))


def _round_interval(op: ops.Op, lo, hi):
    """Round both ends (after widening, unless computed exactly): rounding is monotone, ties
    may fall either way."""
    if getattr(op, "exact_step", None) is None:
        rel = round_rel(op)
        lo = lo - (np.abs(lo) * rel + ROUND_ABS)
        hi = hi + (np.abs(hi) * rel + ROUND_ABS)
    return ops.round_with(op.mode, lo), ops.round_with(op.mode, hi)


def _fake_quant(op: ops.FakeQuant, lo, hi):
    qlo, qhi = _round_interval(op, lo / op.scale, hi / op.scale)
    qlo = np.clip(qlo + op.zero_point, op.qmin, op.qmax)
    qhi = np.clip(qhi + op.zero_point, op.qmin, op.qmax)
    out_lo, out_hi = op.scale * (qlo - op.zero_point), op.scale * (qhi - op.zero_point)
    return _widen(out_lo, out_hi, unit(op) * _mag(out_lo, out_hi))


def propagate_op(op: ops.Op, bounds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Interval of ``op``'s output from the intervals of its inputs (batched)."""
    if hasattr(op, "interval"):  # an op that owns its rules (vnncomp_qeb.ir.nonlinear)
        return op.interval(bounds[0] if len(op.inputs) == 1 else bounds)
    if isinstance(op, ops.Affine):
        return _affine(op, *bounds[0])
    if isinstance(op, ops.AddConst):
        lo, hi = bounds[0]
        lo, hi = lo + op.c, hi + op.c
        return _widen(lo, hi, elementwise_error(op, _mag(lo, hi)))
    if isinstance(op, ops.CastFloat):  # monotone rounding, or none where onnxruntime elides it
        lo, hi = bounds[0]
        return np.minimum(lo, op.forward(lo)), np.maximum(hi, op.forward(hi))
    if isinstance(op, ops.MulConst):
        return _scale(op, *bounds[0])
    if isinstance(op, (ops.Add, ops.Sub)):
        (alo, ahi), (blo, bhi) = bounds
        lo, hi = (alo + blo, ahi + bhi) if isinstance(op, ops.Add) else (alo - bhi, ahi - blo)
        return _widen(lo, hi, elementwise_error(op, _mag(lo, hi)))
    if isinstance(op, ops.FakeQuant):
        return _fake_quant(op, *bounds[0])
    if isinstance(op, ops.Round):
        return _round_interval(op, *bounds[0])
    if isinstance(op, (ops.Relu, ops.Clip, ops.Reshape, ops.Gather)):  # monotone and exact
        lo, hi = bounds[0]
        return op.forward(lo), op.forward(hi)
    if isinstance(op, ops.Concat):
        return op.forward(*(b[0] for b in bounds)), op.forward(*(b[1] for b in bounds))
    raise NotImplementedError(f"no interval rule for {op.kind}")


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
