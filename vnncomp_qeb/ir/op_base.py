"""The base of every operator of the graph IR, and the helpers its rules share.

An op owns all of its rules (docs/design.md §4): ``forward`` (exact reference semantics in
float64), ``interval`` (sound bounds with onnxruntime's float error), ``back_substitute`` (its
linear relaxation, pushed backwards), ``milp_rows`` (its proof/witness MILP encoding),
``backward`` (the gradient the attacks follow) and ``grid_step`` (whether it is computed exactly
on a grid). The analyses walk the graph and call these methods; they hold no per-op rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vnncomp_qeb.ir.float_error import elementwise_error

ROUNDING_MODES = ("half_even", "half_up", "half_away", "floor", "ceil", "toward_zero")


def round_with(mode: str, x: np.ndarray) -> np.ndarray:
    """Round ``x`` to integers with the named rounding mode (all modes are monotone)."""
    if mode == "half_even":
        return np.rint(x)
    if mode == "half_up":
        return np.floor(x + 0.5)
    if mode == "half_away":
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    if mode == "toward_zero":
        return np.trunc(x)
    raise ValueError(f"unknown rounding mode {mode!r}")


def to_precision(x: np.ndarray, precision: str) -> np.ndarray:
    """``x`` rounded to the floating-point type ``precision`` (nearest, ties to even; overflow
    to ±inf), as a float64 array: what a Cast to that type stores."""
    x = np.asarray(x, dtype=np.float64)
    if precision == "float64":
        return x
    if precision in ("float32", "float16"):
        with np.errstate(over="ignore"):
            return x.astype(np.float32 if precision == "float32" else np.float16).astype(np.float64)
    if precision == "bfloat16":  # the top 16 bits of the float32, rounded to nearest even
        with np.errstate(over="ignore"):
            bits = np.ascontiguousarray(x.astype(np.float32)).view(np.uint32)
        finite = np.isfinite(x.astype(np.float32))
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
        out = np.where(finite, rounded, bits & 0xFFFF0000).astype(np.uint32)
        return out.view(np.float32).astype(np.float64)
    raise ValueError(f"unknown floating-point type {precision!r}")


def flat(x: np.ndarray) -> np.ndarray:
    """``(B, *shape)`` → ``(B, n)``."""
    return x.reshape(x.shape[0], -1)


def rowdot(L: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(B, R) = Σ_n L[b, r, n]·v[b, n] (a batched matrix-vector product; einsum is slower)."""
    return np.matmul(L, v[:, :, None])[:, :, 0]


@dataclass(eq=False)
class Op:
    """Base op: named input tensors, one named output tensor, the ONNX node it came from.

    Rules an op does not define raise ``NotImplementedError`` naming the op and the rule, so a
    missing rule fails loudly, never silently unsound."""

    inputs: tuple[str, ...]
    output: str
    source: str = field(default="", kw_only=True)
    # the floating-point type onnxruntime computes this op in: sets its rounding-error bounds
    precision: str = field(default="float32", kw_only=True)
    # error beyond the op's own rounding: relative to the magnitude its error scales with, and
    # absolute per element (constants onnxruntime derives in float32, e.g. BatchNormalization's)
    slack: float = field(default=0.0, kw_only=True)
    slack_abs: np.ndarray | float = field(default=0.0, kw_only=True)

    kind = "op"

    def forward(self, *xs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """One-line human summary of the parameters."""
        return ""

    def _missing(self, rule: str):
        raise NotImplementedError(f"no {rule} rule for {self.kind}")

    def interval(self, bounds):
        """Interval of the output from the input intervals (``(lo, hi)`` for a one-input op, a
        list of them otherwise), batched, sound for onnxruntime's arithmetic."""
        self._missing("interval")

    def back_substitute(self, L: np.ndarray, bounds, const: np.ndarray, ctx) -> list[tuple[str, np.ndarray]]:
        """Coefficients ``(input name, (B, R, n_input))`` for the objective ``L·output``; adds
        the relaxation's constants (lower-bound direction) to ``const`` (B, R). ``ctx`` gives
        the graph and the relaxation cache (:class:`vnncomp_qeb.analysis.backsub.Context`)."""
        self._missing("back-substitution")

    def milp_rows(self, enc, xs: list[np.ndarray]) -> np.ndarray:
        """Columns of the output in the MILP ``enc`` (:mod:`vnncomp_qeb.milp.encode`), given the
        inputs' columns ``xs`` (flat)."""
        self._missing("MILP encoding")

    def backward(self, g: np.ndarray, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Gradients w.r.t. the inputs from the output's gradient ``g`` (batched)."""
        self._missing("gradient")

    def grid_step(self, steps: list, bounds) -> float | None:
        """Spacing of a grid the output lies on when onnxruntime computes it exactly, given the
        inputs' grid steps (None: inexact); see :mod:`vnncomp_qeb.analysis.exact`."""
        return None

    def step_error(self, mag) -> np.ndarray:
        """Float error of one elementwise arithmetic step whose result is at most ``mag``."""
        return elementwise_error(self, mag)
