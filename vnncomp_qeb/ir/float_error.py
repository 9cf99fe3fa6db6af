"""One home for the soundness margins of an op's floating-point evaluation (docs/design.md §2.4).

Arithmetic ops are widened by the standard rounding-error bound (γ_n = n·u for an n-term dot
product, u the unit roundoff of the type the op computes in, doubled to also cover our own
float64 arithmetic); every rounding step (FakeQuant, Round) rounds an input widened by a relative
4u and an absolute 1e-4 of an integer step, so ties and the fused kernels' float32 multiplier
(docs/design.md §2.3) can round either way — unless the exactness analysis proved the input is
computed exactly on a grid (``exact_step``).
"""

from __future__ import annotations

import numpy as np

from vnncomp_qeb import numerics
from vnncomp_qeb.numerics import TINY_OF, UNIT

ROUND_ABS = 1e-4  # in units of the integer grid: widened ties

# round(t) − t ∈ [−h_lo, h_hi] for each rounding mode (ties either way)
_BAND = {"half_even": (0.5, 0.5), "half_up": (0.5, 0.5), "half_away": (0.5, 0.5), "floor": (1.0, 0.0),
         "ceil": (0.0, 1.0), "toward_zero": (1.0, 1.0)}


def unit(op) -> float:
    """Relative rounding error of one arithmetic step of ``op`` (result stored in its type)."""
    return UNIT[op.precision]


def tiny(op) -> float:
    """Absolute rounding error near zero (subnormal spacing) of one result of ``op``."""
    return TINY_OF[op.precision]


def round_rel(op) -> float:
    """Relative error of the value an op rounds (a few steps of arithmetic before it)."""
    return 4 * UNIT[op.precision]


def slack_of(op, mag) -> np.ndarray | float:
    """``slack·mag + slack_abs``, the absolute part laid out like ``mag`` (per sample, with or
    without a leading batch axis, flat or not)."""
    mag = np.asarray(mag)
    extra = op.slack * mag if op.slack else 0.0
    sa = np.asarray(op.slack_abs, dtype=np.float64)
    if sa.ndim and mag.ndim:
        sa = sa.reshape(mag.shape if sa.size == mag.size else mag.shape[1:])
    return extra + sa


def dot_error(op, n_terms: int, mag, out_mag) -> np.ndarray:
    """Float error of an op's ``n_terms``-term dot product: :func:`vnncomp_qeb.numerics.dot_error`,
    plus the op's slack."""
    return numerics.dot_error(op.precision, n_terms, mag, out_mag) + slack_of(op, mag)


def elementwise_error(op, mag) -> np.ndarray:
    """Float error of one elementwise arithmetic step of ``op`` whose result is at most ``mag``
    in magnitude, plus the op's slack (a cast overrides :meth:`Op.step_error`)."""
    return unit(op) * np.asarray(mag) + tiny(op) + slack_of(op, mag)


def rounding_band(op, t_mag) -> tuple:
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


def widen(lo: np.ndarray, hi: np.ndarray, err) -> tuple[np.ndarray, np.ndarray]:
    """``[lo − err, hi + err]``."""
    return lo - err, hi + err


def mag(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Largest magnitude of an interval."""
    return np.maximum(np.abs(lo), np.abs(hi))
