"""``DynamicQuantizeLinear`` and its dequantization as one op that owns all of its rules.

onnxruntime's ``quantize_dynamic`` models quantize each activation tensor with a scale and zero
point computed at run time from the tensor's own range (docs/design.md §2.6)::

    lo = min(0, min x),  hi = max(0, max x)          (float32, over the whole sample)
    s  = (hi − lo) / 255   (1 where hi = lo),  z = round_half_even(clip(−lo / s, 0, 255))
    q  = clip(round_half_even(x / s) + z, 0, 255)

and the integer kernels that read ``q`` are rescaled by ``s`` again, so what the rest of the
network sees is ``r = s·(q − z)``. That value is this op's output. Because ``z`` is ``−lo/s``
rounded and the codes span the range, ``|r − x| ≤ s·(1/2 + 255·u)`` for every element, and
``s ≤ (max(0, max hi) − min(0, min lo))/255·(1 + 2u)`` over a box: a noise term whose size is a
function of the box. Every analysis uses exactly that: ``x − e ≤ r ≤ x + e``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vnncomp_qeb.ir.nonlinear import Nonlinear

LEVELS = 255.0  # DynamicQuantizeLinear is uint8 only
HALF = 0.5 + 2.0**-12  # |round(x/s) + z − z − x/s| in codes, with float32's division and clip errors
SCALE_SLACK = 2.0**-20  # the float32 subtraction and division computing s


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def noise_bound(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(B,) bound on ``|r − x|`` for every element of a sample whose input lies in [lo, hi]."""
    lo, hi = _flat(lo), _flat(hi)
    top = np.maximum(hi.max(axis=1, initial=0.0), 0.0)
    bottom = np.minimum(lo.min(axis=1, initial=0.0), 0.0)
    with np.errstate(invalid="ignore"):
        e = HALF * (top - bottom) / LEVELS * (1.0 + SCALE_SLACK)
    return np.where(np.isnan(e), np.inf, e)


def staircase(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sound ranges of the scale ``s`` (B, 1) and of ``m = q − z`` (B, n) over a box, from the
    staircase itself: ``q − z = clip(round(x/s), −z, 255 − z)`` is nondecreasing in ``x`` and
    nonincreasing in ``z``. Once the box is narrow, ``m`` is one code and ``r = s·m`` nearly exact."""
    top_lo, top_hi = np.maximum(lo.max(axis=1), 0.0), np.maximum(hi.max(axis=1), 0.0)
    bot_lo, bot_hi = np.minimum(lo.min(axis=1), 0.0), np.minimum(hi.min(axis=1), 0.0)
    s_lo = (top_lo - bot_hi) / LEVELS * (1.0 - SCALE_SLACK)
    s_hi = (top_hi - bot_lo) / LEVELS * (1.0 + SCALE_SLACK)
    # s = 1 for an all-zero sample (then r = x = 0): only a box that excludes it gets the staircase
    usable = (s_lo > 0) & np.isfinite(s_hi)
    s_lo, s_hi = np.where(usable, s_lo, np.nan)[:, None], np.where(usable, s_hi, np.nan)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        t_lo = np.minimum(lo / s_lo, lo / s_hi)
        t_hi = np.maximum(hi / s_lo, hi / s_hi)
        z_lo = np.clip(-bot_hi[:, None] / s_hi, 0.0, LEVELS)
        z_hi = np.clip(-bot_lo[:, None] / s_lo, 0.0, LEVELS)
    # float32's division: a relative error of 2^-24 (widened to 2^-22), then round half to even
    k_lo, k_hi = np.rint(t_lo - np.abs(t_lo) * 2.0**-22), np.rint(t_hi + np.abs(t_hi) * 2.0**-22)
    z_lo, z_hi = np.rint(z_lo - z_lo * 2.0**-22), np.rint(z_hi + z_hi * 2.0**-22)
    m_lo = np.clip(k_lo, -z_hi, LEVELS - z_hi)
    m_hi = np.clip(k_hi, -z_lo, LEVELS - z_lo)
    B = lo.shape[0]
    return np.broadcast_to(s_lo, lo.shape), np.broadcast_to(s_hi, lo.shape), m_lo.reshape(B, -1), m_hi.reshape(B, -1)


@dataclass(eq=False)
class DynamicQuant(Nonlinear):
    """``r = s·(q − z)`` with ``s``, ``z`` computed from the sample's own range (uint8)."""

    kind = "DynamicQuant"

    def params(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(float32 input (B, n), scale (B,), zero point (B,)) exactly as onnxruntime computes them."""
        x32 = _flat(x).astype(np.float32)
        lo = np.minimum(x32.min(axis=1), np.float32(0))
        hi = np.maximum(x32.max(axis=1), np.float32(0))
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(hi == lo, np.float32(1), (hi - lo) / np.float32(LEVELS)).astype(np.float32)
            z = np.rint(np.clip(np.float32(0) - lo / s, np.float32(0), np.float32(LEVELS)))
        return x32, s, z

    def forward(self, x):
        x32, s, z = self.params(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.clip(np.rint(x32 / s[:, None]) + z[:, None], 0, LEVELS)
        return ((q - z[:, None]).astype(np.float64) * s[:, None].astype(np.float64)).reshape(x.shape)

    def describe(self):
        return "uint8, scale and zero point from the sample's range"

    def interval(self, bounds):
        lo, hi = bounds
        e = noise_bound(lo, hi).reshape((-1,) + (1,) * (lo.ndim - 1))
        s_lo, s_hi, m_lo, m_hi = (v.reshape(lo.shape) for v in staircase(_flat(lo), _flat(hi)))
        with np.errstate(invalid="ignore"):
            r_lo = np.minimum(s_lo * m_lo, s_hi * m_lo)
            r_hi = np.maximum(s_lo * m_hi, s_hi * m_hi)
        # both hold: keep the tighter (the staircase pins r once a box is narrower than a code)
        return (np.maximum(lo - e, np.where(np.isnan(r_lo), -np.inf, r_lo)),
                np.minimum(hi + e, np.where(np.isnan(r_hi), np.inf, r_hi)))

    def back_substitute(self, L, bounds, const, ctx=None):
        lo, hi = (_flat(v) for v in bounds[self.inputs[0]])
        olo, ohi = (_flat(v) for v in bounds[self.output])
        e = noise_bound(lo, hi)[:, None]
        # the constant interval where the staircase pins r (narrower than half the band), else x ± e
        flat = (ohi - olo) < e
        Lx = np.where(flat[:, None, :], 0.0, L)
        Lc = L - Lx
        const -= (np.abs(Lx) * e[:, None, :]).sum(axis=2)  # L·r ≥ L·x − |L|·e
        with np.errstate(invalid="ignore"):
            const += (np.where(Lc > 0, Lc * olo[:, None, :], 0.0) + np.where(Lc < 0, Lc * ohi[:, None, :], 0.0)).sum(axis=2)
        return [(self.inputs[0], Lx)]

    def milp_rows(self, enc, xs):
        x = xs[0]
        lo, hi = enc.lohi(self.inputs[0])
        e = float(noise_bound(lo[None], hi[None])[0])
        y = enc.fresh(self.output)
        if np.isfinite(e):
            n = x.size
            enc.m.add_rows(np.stack([y, x], 1), np.stack([np.ones(n), -np.ones(n)], 1), np.full(n, -e), np.full(n, e))
        return y

    def backward(self, g, xs):
        return [g]  # straight through the rounding
