"""Linear relaxations of the IR's elementwise nonlinear ops, given bounds on their input.

Relu, Clip, Round and FakeQuant all have the form ``s·g(t ± h)`` with ``t = x/s``, ``g`` a clamp to
[a, b] and ``h`` the rounding band: ``g(t − h_lo) ≤ y/s ≤ g(t + h_hi)``. The band includes the
widened ties and float32 error of :mod:`vnncomp_qeb.analysis.interval`, so every relaxation is
sound for what onnxruntime computes. Returns slopes and intercepts ``aL·x + bL ≤ y ≤ aU·x + bU``.
"""

from __future__ import annotations

import numpy as np

from vnncomp_qeb.analysis.interval import rounding_band, unit
from vnncomp_qeb.ir import ops

NONLINEAR = (ops.Relu, ops.Clip, ops.Round, ops.FakeQuant)


def _lower_line(L, U_, a, b):
    """Slope and intercept of a line below clamp(v, a, b) on [L, U_] (CROWN-style choice)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.where(U_ > b, np.minimum(1.0, (b - a) / (U_ - a)), 1.0)
        kink = np.where(U_ - a >= a - L, top, 0.0)  # line through (a, a)
        chord = (b - L) / (U_ - L)  # concave part: chord (L, L) → (U_, b)
        slope = np.select([U_ <= a, L >= b, (L >= a) & (U_ <= b), L < a], [0.0, 0.0, 1.0, kink], chord)
        icpt = np.select([U_ <= a, L >= b, (L >= a) & (U_ <= b), L < a],
                         [a, b, 0.0, a - kink * a], L - chord * L)
    return slope, icpt


def _upper_line(L, U_, a, b):
    """Slope and intercept of a line above clamp(v, a, b) on [L, U_]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bottom = np.where(L < a, np.minimum(1.0, (b - a) / (b - L)), 1.0)
        kink = np.where(b - L >= U_ - b, bottom, 0.0)  # line through (b, b)
        chord = (U_ - a) / (U_ - L)  # convex part: chord (L, a) → (U_, U_)
        slope = np.select([U_ <= a, L >= b, (L >= a) & (U_ <= b), U_ > b], [0.0, 0.0, 1.0, kink], chord)
        icpt = np.select([U_ <= a, L >= b, (L >= a) & (U_ <= b), U_ > b],
                         [a, b, 0.0, b - kink * b], a - chord * L)
    return slope, icpt


def clamp_params(op: ops.Op):
    """(scale s, a, b, rounds?) of an op in the form s·clamp(round(x/s), a, b)."""
    if isinstance(op, ops.Relu):
        return 1.0, 0.0, np.inf, False
    if isinstance(op, ops.Clip):
        return 1.0, op.lo, op.hi, False
    if isinstance(op, ops.Round):
        return 1.0, -np.inf, np.inf, True
    if isinstance(op, ops.FakeQuant):
        return op.scale, op.qmin - op.zero_point, op.qmax - op.zero_point, True
    raise TypeError(op.kind)


def relax(op: ops.Op, lo: np.ndarray, hi: np.ndarray, out_lo: np.ndarray, out_hi: np.ndarray):
    """``(aL, bL, aU, bU)`` shaped like ``lo`` with ``aL·x + bL ≤ op(x) ≤ aU·x + bU`` on [lo, hi].
    ``out_lo``/``out_hi`` are the op's interval bounds: where they pin the output to one value,
    the relaxation is that constant."""
    s, a, b, rounding = clamp_params(op)
    s = np.asarray(s, dtype=np.float64)
    tl, tu = lo / s, hi / s
    h_lo, h_hi = rounding_band(op, np.maximum(np.abs(tl), np.abs(tu))) if rounding else (0.0, 0.0)
    la, lb = _lower_line(tl - h_lo, tu - h_lo, a, b)
    ua, ub = _upper_line(tl + h_hi, tu + h_hi, a, b)
    # in t: y/s ≥ la·(t − h_lo) + lb, y/s ≤ ua·(t + h_hi) + ub; with t = x/s and y = s·(y/s):
    aL, bL = la + 0 * s, s * (lb - la * h_lo)
    aU, bU = ua + 0 * s, s * (ub + ua * h_hi)
    if rounding:  # the product s·q in floating point
        slack = unit(op) * np.maximum(np.abs(out_lo), np.abs(out_hi))
        bL, bU = bL - slack, bU + slack
    pinned = out_lo >= out_hi
    aL, bL = np.where(pinned, 0.0, aL), np.where(pinned, out_lo, bL)
    aU, bU = np.where(pinned, 0.0, aU), np.where(pinned, out_hi, bU)
    return aL, bL, aU, bU
