"""Power-of-two grids of exactly computed values: the helpers of the ops' ``grid_step`` rules and
of the exactness analysis (:mod:`vnncomp_qeb.analysis.exact`)."""

from __future__ import annotations

import numpy as np

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


def max_mag(bounds, name) -> float:
    """Largest magnitude of tensor ``name`` over all boxes of ``bounds``."""
    lo, hi = bounds[name]
    return float(np.max(np.maximum(np.abs(lo), np.abs(hi)))) if lo.size else 0.0


def fits(step: float | None, mag: float, precision: str) -> float | None:
    """``step`` when values up to ``mag`` on that grid are computed exactly in ``precision``."""
    if step is None or step == FLOAT_VALUES or np.isnan(step) or not np.isfinite(mag):
        return None
    if not np.isfinite(step):
        return step
    return step if mag / step <= MAX_RATIO[precision] else None


def exact_inputs(op, steps: list) -> bool:
    """The inputs are all on known grids and the op adds no derived-constant error."""
    return not (any(s is None for s in steps) or op.slack or np.any(np.asarray(op.slack_abs) != 0))
