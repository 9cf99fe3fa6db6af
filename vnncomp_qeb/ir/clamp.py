"""Clamp-like activations, each owning all of its rules (docs/design.md §4): Relu, Clip, Round and
FakeQuant — the one normal form of every quantization.

All four have the form ``s·g(t ± h)`` with ``t = x/s``, ``g`` a clamp to ``[a, b]`` and ``h`` the
rounding band (zero for Relu and Clip): ``g(t − h_lo) ≤ y/s ≤ g(t + h_hi)``
(:meth:`Clamp.clamp_params`). The band includes the widened ties and float error of
:func:`vnncomp_qeb.ir.float_error.rounding_band`, so every rule is sound for what onnxruntime
computes. The base class turns that form into the interval rule, the linear relaxation
(CROWN-style lines), back-substitution and the MILP encoding (a clamp with a binary per side
that can saturate; a rounding step adds an integer code in its band).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vnncomp_qeb.ir import grid
from vnncomp_qeb.ir.float_error import ROUND_ABS, mag, round_rel, rounding_band, unit, widen
from vnncomp_qeb.ir.op_base import Op, round_with, rowdot
from vnncomp_qeb.numerics import SUBNORMAL


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


def apply_relaxation(L: np.ndarray, const: np.ndarray, aL, bL, aU, bU) -> np.ndarray:
    """Push ``L·y`` through ``aL·x + bL ≤ y ≤ aU·x + bU`` (flat, batched): the coefficients on
    ``x``; the intercepts are added to ``const`` (lower-bound direction)."""
    Lp = np.maximum(L, 0)
    Ln = L - Lp
    const += rowdot(Lp, bL) + rowdot(Ln, bU)
    Lp *= aL[:, None, :]
    Ln *= aU[:, None, :]
    Lp += Ln
    return Lp


class Clamp(Op):
    """``s·clamp(round(x/s), a, b)`` (``rounds``) or ``clamp(x, a, b)``."""

    rounds = False

    def clamp_params(self):
        """(scale s, a, b, rounds?) of the op in the form s·clamp(round(x/s), a, b)."""
        raise NotImplementedError  # pragma: no cover - every clamp defines it

    def relaxation(self, lo, hi, out_lo, out_hi):
        """``(aL, bL, aU, bU)`` shaped like ``lo`` with ``aL·x + bL ≤ op(x) ≤ aU·x + bU`` on [lo, hi].
        ``out_lo``/``out_hi`` are the op's interval bounds: where they pin the output to one
        value, the relaxation is that constant."""
        s, a, b, rounding = self.clamp_params()
        s = np.asarray(s, dtype=np.float64)
        tl, tu = lo / s, hi / s
        h_lo, h_hi = rounding_band(self, mag(tl, tu)) if rounding else (0.0, 0.0)
        la, lb = _lower_line(tl - h_lo, tu - h_lo, a, b)
        ua, ub = _upper_line(tl + h_hi, tu + h_hi, a, b)
        # in t: y/s ≥ la·(t − h_lo) + lb, y/s ≤ ua·(t + h_hi) + ub; with t = x/s and y = s·(y/s):
        aL, bL = la + 0 * s, s * (lb - la * h_lo)
        aU, bU = ua + 0 * s, s * (ub + ua * h_hi)
        if rounding:  # the product s·q in floating point
            slack = unit(self) * mag(out_lo, out_hi)
            bL, bU = bL - slack, bU + slack
        pinned = out_lo >= out_hi
        aL, bL = np.where(pinned, 0.0, aL), np.where(pinned, out_lo, bL)
        aU, bU = np.where(pinned, 0.0, aU), np.where(pinned, out_hi, bU)
        return aL, bL, aU, bU

    def back_substitute(self, L, bounds, const, ctx):
        return [(self.inputs[0], apply_relaxation(L, const, *ctx.relaxations.get(self, bounds)))]

    def interval(self, bounds):  # monotone and exact (Relu, Clip)
        return self.forward(bounds[0]), self.forward(bounds[1])

    def milp_rows(self, enc, xs):
        _, a, b, _ = self.clamp_params()
        xl, xu = enc.lohi(self.inputs[0])
        return enc.clamp(xs[0], xl, xu, np.full(xl.shape, a, dtype=np.float64), np.full(xl.shape, b, dtype=np.float64))


@dataclass(eq=False)
class Relu(Clamp):
    kind = "Relu"

    def forward(self, x):
        return np.maximum(x, 0.0)

    def clamp_params(self):
        return 1.0, 0.0, np.inf, False

    def backward(self, g, xs):
        return [g * (xs[0] > 0)]

    def grid_step(self, steps, bounds):
        return steps[0] if grid.exact_inputs(self, steps) else None


@dataclass(eq=False)
class Clip(Clamp):
    """Clamp to [lo, hi]; either bound may be -inf / +inf."""

    lo: float = -np.inf
    hi: float = np.inf
    kind = "Clip"

    def forward(self, x):
        return np.clip(x, self.lo, self.hi)

    def describe(self):
        return f"[{self.lo}, {self.hi}]"

    def clamp_params(self):
        return 1.0, self.lo, self.hi, False

    def backward(self, g, xs):
        return [g * ((xs[0] > self.lo) & (xs[0] < self.hi))]

    def grid_step(self, steps, bounds):
        if not grid.exact_inputs(self, steps):
            return None
        ends = [grid.dyadic_step(v) for v in (self.lo, self.hi) if np.isfinite(v)]
        return None if any(e is None for e in ends) else min([steps[0]] + ends)


class Rounding(Clamp):
    """A clamp with a rounding step: an integer code in the rounding band of ``x/s``."""

    rounds = True

    def round_interval(self, lo, hi):
        """Round both ends (after widening, unless computed exactly): rounding is monotone,
        ties may fall either way."""
        if getattr(self, "exact_step", None) is None:
            rel = round_rel(self)
            lo = lo - (np.abs(lo) * rel + ROUND_ABS)
            hi = hi + (np.abs(hi) * rel + ROUND_ABS)
        return round_with(self.mode, lo), round_with(self.mode, hi)

    def rounded_grid(self, x_step: float | None, x_mag: float) -> float | None:
        """Grid of what the step rounds (x for Round, x/s for FakeQuant), if computed exactly."""
        s = np.asarray(self.clamp_params()[0], dtype=np.float64)
        if x_step is None:
            return None
        if x_step == grid.FLOAT_VALUES:
            # the input's own floats: rounded as they are, or divided by a power of two — exact
            # either way, on the grid of the type's smallest float
            return SUBNORMAL[self.precision] / float(np.max(np.abs(s))) if grid.is_pow2(s) else None
        if not grid.is_pow2(s):
            return None
        return grid.fits(x_step / float(np.max(np.abs(s))), x_mag / float(np.min(np.abs(s))), self.precision)

    def milp_rows(self, enc, xs):
        return enc.rounding(self, xs[0])

    def backward(self, g, xs):
        return [g]  # straight through inside the range


@dataclass(eq=False)
class Round(Rounding):
    """Elementwise rounding to integers (ONNX Round, Floor, Ceil, float→int Cast)."""

    mode: str = "half_even"
    # spacing of the exact grid its input lies on when onnxruntime computes it exactly
    # (set by vnncomp_qeb.analysis.exact); None: unknown, ties and float error are allowed for
    exact_step: float | None = field(default=None, kw_only=True)
    kind = "Round"

    def forward(self, x):
        return round_with(self.mode, x)

    def describe(self):
        return self.mode

    def clamp_params(self):
        return 1.0, -np.inf, np.inf, True

    def interval(self, bounds):
        return self.round_interval(*bounds)

    def grid_step(self, steps, bounds):
        return 1.0  # an integer whatever its input was


@dataclass(eq=False)
class FakeQuant(Rounding):
    """``s·(clamp(round(x/s) + z, qmin, qmax) − z)``: the one normal form of quantization.

    ``scale`` and ``zero_point`` broadcast against the per-sample shape (per-tensor: scalars;
    per-axis: shaped so that the axis lines up). ``qmin``/``qmax`` are the integer range.
    """

    scale: np.ndarray = None
    zero_point: np.ndarray = None
    qmin: float = -128.0
    qmax: float = 127.0
    mode: str = "half_even"
    exact_step: float | None = field(default=None, kw_only=True)  # of x/s; see Round
    kind = "FakeQuant"

    def integer(self, x: np.ndarray) -> np.ndarray:
        """The integer code ``clamp(round(x/s) + z)`` that the quantized tensor holds."""
        return np.clip(round_with(self.mode, x / self.scale) + self.zero_point, self.qmin, self.qmax)

    def forward(self, x):
        return self.scale * (self.integer(x) - self.zero_point)

    def describe(self):
        s = np.asarray(self.scale)
        sc = f"s={float(s):.6g}" if s.size == 1 else f"s[{s.size}]"
        z = np.asarray(self.zero_point)
        zp = f"z={float(z):g}" if z.size == 1 else f"z[{z.size}]"
        return f"{sc} {zp} [{self.qmin:g},{self.qmax:g}] {self.mode}"

    def clamp_params(self):
        return self.scale, self.qmin - self.zero_point, self.qmax - self.zero_point, True

    def interval(self, bounds):
        qlo, qhi = self.round_interval(bounds[0] / self.scale, bounds[1] / self.scale)
        qlo = np.clip(qlo + self.zero_point, self.qmin, self.qmax)
        qhi = np.clip(qhi + self.zero_point, self.qmin, self.qmax)
        out_lo, out_hi = self.scale * (qlo - self.zero_point), self.scale * (qhi - self.zero_point)
        return widen(out_lo, out_hi, unit(self) * mag(out_lo, out_hi))

    def milp_rows(self, enc, xs):
        q = enc.rounding(self, xs[0])  # the clamped code; then the product s·q in floating point
        lo, hi = enc.lohi(self.output)
        s = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), enc.shape(self.inputs[0])).reshape(-1)
        return enc.linear(self, [(q[:, None], s[:, None])], 0.0, unit(self) * mag(lo, hi))

    def backward(self, g, xs):
        code = self.integer(xs[0])
        return [g * ((code > self.qmin) & (code < self.qmax))]

    def grid_step(self, steps, bounds):
        ss = grid.dyadic_step(self.scale)  # s·q with q an integer code
        return None if ss is None else grid.fits(ss, grid.max_mag(bounds, self.output), self.precision)


CLAMPS = (Relu, Clip, Round, FakeQuant)
