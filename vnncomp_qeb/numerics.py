"""The one home of the floating-point facts every bound relies on (docs/design.md §3.1).

Every analysis encloses both the exact real value of a tensor and what onnxruntime computes for
it in the tensor's element type (``op.precision``). These are the error terms that make that true:
the relative unit of one arithmetic step, the absolute floor near zero (subnormal spacing), the
error of one rounding to a type, and the accumulation type onnxruntime uses for dot products.
"""

from __future__ import annotations

import platform

import numpy as np

PRECISIONS = ("float64", "float32", "float16", "bfloat16")  # finest to coarsest
# bits of the significand (implicit bit included)
SIGNIFICAND = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}
# smallest positive subnormal
SUBNORMAL = {"float64": 2.0**-1074, "float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
# largest finite value: beyond (half a step past) it a rounding gives ±inf
FINITE_MAX = {"float64": float(np.finfo(np.float64).max), "float32": float(np.finfo(np.float32).max),
              "float16": 65504.0, "bfloat16": float(np.float32(3.3895314e38))}

# relative error per operation: twice the unit roundoff of the type the op is computed in
# (the factor two also covers our own float64 arithmetic)
UNIT = {p: 2.0 ** (1 - SIGNIFICAND[p]) for p in PRECISIONS}
TINY = 1e-30  # absolute floor: covers underflow to subnormals (float64, float32, bfloat16)
# float16's subnormals are spaced 2^-24: a result near zero may be off by half of that
TINY_OF = {"float64": TINY, "float32": TINY, "float16": SUBNORMAL["float16"], "bfloat16": TINY}


def _accumulation_types() -> dict[str, str]:
    """The type onnxruntime's CPU kernels accumulate in, per tensor element type. On x86-64 the
    float16/bfloat16 kernels (Gemm, MatMul, ...) run in float32 behind inserted Casts and round
    the result to the storage type (measured: docs/design.md §2.4); elsewhere
    (ARM's native half-precision GEMM) the accumulation may be in the storage type itself."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        return {"float64": "float64", "float32": "float32", "float16": "float32", "bfloat16": "float32"}
    return {p: p for p in PRECISIONS}


ACCUMULATE = _accumulation_types()


def coarsest(*precisions: str) -> str:
    """The least precise of the given floating-point types."""
    return max(precisions, key=PRECISIONS.index)


def rounding_error(precision: str, mag) -> np.ndarray:
    """Bound on ``|v − fl(v)|`` for one rounding to nearest of any ``|v| ≤ mag`` to ``precision``:
    half the spacing of the binade of ``mag`` (never less than half a subnormal step); +inf where
    ``v`` may overflow. Exact powers of two, so our own float64 arithmetic adds nothing."""
    mag = np.asarray(mag, dtype=np.float64)
    _, e = np.frexp(mag)  # mag < 2^e
    half = np.ldexp(1.0, e - 1 - SIGNIFICAND[precision])  # half the spacing 2^(e-t) of [2^(e-1), 2^e)
    half = np.where(mag > 0, np.maximum(half, SUBNORMAL[precision] / 2), 0.0)
    return np.where(mag < FINITE_MAX[precision], half, np.inf)


def dot_error(precision: str, n_terms: int, mag, out_mag) -> np.ndarray:
    """Bound on the error of an ``n_terms``-term dot product (plus bias) whose terms' absolute
    values sum to at most ``mag``, as onnxruntime computes a tensor of type ``precision``: γ_{n+2}
    in the accumulation type, then (float16/bfloat16 tensors) one rounding of the result, whose
    magnitude is at most ``out_mag``, to the storage type."""
    acc = ACCUMULATE[precision]
    err = (n_terms + 2) * UNIT[acc] * np.asarray(mag) + (n_terms + 2) * TINY_OF[acc]
    if acc != precision:
        err = err + rounding_error(precision, (np.asarray(out_mag) + err) * (1 + UNIT[acc]))
    return err
