"""Typed operations of the graph IR.

Every tensor is real-valued and carries a leading batch axis: an op maps arrays of shape
``(B, *shape)`` to ``(B, *shape')``. Integer ONNX tensors (the outputs of QuantizeLinear and the
QOperator kernels) are represented by their dequantized real value; every quantization form is
normalised to :class:`FakeQuant`. ``forward`` is the exact reference semantics in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vnncomp_qeb import numerics

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


@dataclass(eq=False)
class Op:
    """Base op: named input tensors, one named output tensor, the ONNX node it came from."""

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


@dataclass(eq=False)
class Affine(Op):
    """``y = flat(x) @ W + b``; W has shape (in, out): a dense array (Gemm, MatMul) or a sparse
    one (scipy CSC) holding a convolution or pooling in patch form — each output column stores
    only its patch's weights, so a Conv is never a dense matrix. Every analysis reads W through
    ``@``, ``.T``, ``np.abs`` and ``.shape``, which both kinds provide."""

    W: np.ndarray = None
    b: np.ndarray | None = None
    # rounding steps beyond the dot product and bias that onnxruntime may take (folded scalings)
    extra_steps: int = field(default=0, kw_only=True)
    kind = "Affine"

    def forward(self, x):
        y = x.reshape(x.shape[0], -1) @ self.W
        return y if self.b is None else y + self.b

    @property
    def sparse(self) -> bool:
        return not isinstance(self.W, np.ndarray)

    @property
    def fan_in(self) -> int:
        """Terms of the longest dot product (a convolution: its patch size)."""
        if not self.sparse:
            return int(self.W.shape[0])
        return int(np.max(np.diff(self.W.indptr), initial=0))

    def weights(self) -> np.ndarray:
        """The stored weight values (dense: all of W)."""
        return self.W.data if self.sparse else self.W

    def describe(self):
        kind = f"patches of {self.fan_in} " if self.sparse else ""
        return f"{kind}{self.W.shape[0]}->{self.W.shape[1]}" + ("" if self.b is None else " +b")


@dataclass(eq=False)
class AddConst(Op):
    """``y = x + c`` with a broadcast constant."""

    c: np.ndarray = None
    kind = "AddConst"

    def forward(self, x):
        return x + self.c

    def describe(self):
        return f"c{list(np.shape(self.c))}"


@dataclass(eq=False)
class MulConst(Op):
    """``y = x * c`` (or ``x / c`` when ``divide``, kept apart because x/c ≠ x*(1/c) in floats)."""

    c: np.ndarray = None
    divide: bool = False
    kind = "MulConst"

    def forward(self, x):
        return x / self.c if self.divide else x * self.c

    def describe(self):
        return ("/" if self.divide else "*") + f"c{list(np.shape(self.c))}"


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


@dataclass(eq=False)
class CastFloat(MulConst):
    """A Cast to a narrower floating-point type (``precision``): ``x`` rounded to that type, or
    ``x`` itself — onnxruntime removes a Cast to float16 that meets the Cast back to float32 it
    inserts before a kernel without float16 support (docs/design.md §2.4).

    For the analyses it is ``x·1`` computed in that type, i.e. the identity plus the type's
    rounding error, which covers both and which every analysis already bounds for a
    ``MulConst``; ``forward`` rounds (what a float16 input fed to the model is)."""

    kind = "CastFloat"

    def __post_init__(self):
        self.c = np.float64(1.0)
        self.divide = False

    def forward(self, x):
        return to_precision(x, self.precision)

    def error(self, mag) -> np.ndarray:
        """Bound on ``|cast(x) − x|`` for ``|x| ≤ mag``: one rounding to the type."""
        return numerics.rounding_error(self.precision, mag)

    def describe(self):
        return f"to {self.precision}"


@dataclass(eq=False)
class Add(Op):
    """Sum of two variable tensors."""

    kind = "Add"

    def forward(self, a, b):
        return a + b


@dataclass(eq=False)
class Sub(Op):
    """Difference of two variable tensors (the heart of a difference model)."""

    kind = "Sub"

    def forward(self, a, b):
        return a - b


@dataclass(eq=False)
class Relu(Op):
    kind = "Relu"

    def forward(self, x):
        return np.maximum(x, 0.0)


@dataclass(eq=False)
class Clip(Op):
    """Clamp to [lo, hi]; either bound may be -inf / +inf."""

    lo: float = -np.inf
    hi: float = np.inf
    kind = "Clip"

    def forward(self, x):
        return np.clip(x, self.lo, self.hi)

    def describe(self):
        return f"[{self.lo}, {self.hi}]"


@dataclass(eq=False)
class Round(Op):
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


@dataclass(eq=False)
class FakeQuant(Op):
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


@dataclass(eq=False)
class Reshape(Op):
    """Reshape the per-sample part of the tensor (the batch axis is kept)."""

    shape: tuple[int, ...] = ()
    kind = "Reshape"

    def forward(self, x):
        return x.reshape((x.shape[0],) + tuple(self.shape))

    def describe(self):
        return str(list(self.shape))


@dataclass(eq=False)
class Concat(Op):
    """Concatenate along a per-sample axis (``axis`` counts the batch axis, as in ONNX)."""

    axis: int = 1
    kind = "Concat"

    def forward(self, *xs):
        return np.concatenate(xs, axis=self.axis)

    def describe(self):
        return f"axis={self.axis}"


@dataclass(eq=False)
class Gather(Op):
    """Pick flat per-sample elements by index (used to tie the inputs of several networks)."""

    indices: np.ndarray = None
    shape: tuple[int, ...] = ()
    kind = "Gather"

    def forward(self, x):
        flat = x.reshape(x.shape[0], -1)[:, self.indices]
        return flat.reshape((x.shape[0],) + tuple(self.shape))


LINEAR_KINDS = (Affine, AddConst, MulConst, Add, Sub, Reshape, Concat, Gather)
PRECISIONS = numerics.PRECISIONS
coarsest = numerics.coarsest
