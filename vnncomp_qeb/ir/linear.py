"""Linear operators, each owning all of its rules (docs/design.md §4): affine maps (dense, or a
convolution / pooling in sparse patch form), adding or multiplying by a constant, a cast to a
narrower float type, sums and differences of two computed tensors, and the data movement ops
(Reshape, Concat, Gather).

Float error: every arithmetic op is widened by its rounding-error bound
(:mod:`vnncomp_qeb.ir.float_error`) — in intervals, as a constant of back-substitution, and as the
slack of its MILP row in the proof model; data movement is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vnncomp_qeb import numerics
from vnncomp_qeb.ir import grid
from vnncomp_qeb.ir.float_error import dot_error, mag, widen
from vnncomp_qeb.ir.op_base import Op, flat, rowdot, to_precision
from vnncomp_qeb.ir.patches import patch_arrays


def flat_mag(bounds, name: str) -> np.ndarray:
    """(B, n): the largest magnitude of each element of tensor ``name``."""
    lo, hi = bounds[name]
    return flat(mag(lo, hi))


class Elementwise(Op):
    """An elementwise arithmetic op: one rounding step of its result (``step_error``)."""

    def _out_error(self, bounds) -> np.ndarray:
        return self.step_error(flat_mag(bounds, self.output))

    def _milp_error(self, enc) -> np.ndarray:
        lo, hi = enc.lohi(self.output)
        return self.step_error(mag(lo, hi))


@dataclass(eq=False)
class Affine(Op):
    """``y = flat(x) @ W + b``; W has shape (in, out): a dense array (Gemm, MatMul) or a sparse
    one (scipy CSC) holding a convolution or pooling in patch form — each output column stores
    only its patch's weights, so a Conv is never a dense matrix. Every rule reads W through
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

    def float_error(self, bounds) -> np.ndarray:
        """Bound (B, out) on the rounding error of evaluating the op (γ_n with n + 2 terms)."""
        mag_in = flat_mag(bounds, self.inputs[0])
        return dot_error(self, self.fan_in + self.extra_steps,
                         mag_in @ np.abs(self.W) + (0 if self.b is None else np.abs(self.b)),
                         flat_mag(bounds, self.output))

    def interval(self, bounds):
        lo, hi = (flat(v) for v in bounds)
        c, r = (lo + hi) / 2, (hi - lo) / 2
        absW = np.abs(self.W)
        yc, yr = c @ self.W, r @ absW
        m = mag(lo, hi) @ absW
        if self.b is not None:
            yc = yc + self.b
            m = m + np.abs(self.b)
        return widen(yc - yr, yc + yr, dot_error(self, self.fan_in + self.extra_steps, m, mag(yc - yr, yc + yr)))

    def back_substitute(self, L, bounds, const, ctx):
        err = ctx.relaxations.affine_error(self, bounds)
        if self.b is not None:
            const += L @ self.b
        const -= rowdot(np.abs(L), err)
        B, R, n = L.shape  # one GEMM for the batch (a stacked matmul runs one per box)
        return [(self.inputs[0], (L.reshape(B * R, n) @ self.W.T).reshape(B, R, -1))]

    def milp_rows(self, enc, xs):
        x = xs[0].reshape(-1, self.W.shape[0])
        lead, n_out = x.shape[0], self.W.shape[1]
        if self.sparse:  # a convolution: each row reads its patch only
            at, vals = patch_arrays(self.W)
            cols = x[0][at]
        else:
            cols = np.repeat(x, n_out, axis=0)  # row (p, j) reads x[p, :]
            vals = np.tile(self.W.T, (lead, 1))
        b = np.zeros(n_out) if self.b is None else np.broadcast_to(self.b, (n_out,))
        err = self.float_error(enc.bounds).reshape(-1)
        return enc.linear(self, [(cols, vals)], np.tile(b, lead), err)

    def backward(self, g, xs):
        return [(flat(g) @ self.W.T).reshape(xs[0].shape)]

    def grid_step(self, steps, bounds):
        if not grid.exact_inputs(self, steps):
            return None
        sw = grid.dyadic_step(self.weights())
        sb = np.inf if self.b is None else grid.dyadic_step(self.b)
        if sw is None or sb is None:
            return None
        partial = float(np.max(flat_mag(bounds, self.inputs[0]) @ np.abs(self.W)
                               + (0 if self.b is None else np.abs(self.b)), initial=0.0))
        return grid.fits(min(steps[0] * sw, sb), partial, self.precision)


def _const(c, shape) -> np.ndarray:
    """A broadcast constant laid out flat like a tensor of per-sample ``shape``."""
    return np.broadcast_to(np.asarray(c, dtype=np.float64), shape).reshape(-1)


@dataclass(eq=False)
class AddConst(Elementwise):
    """``y = x + c`` with a broadcast constant."""

    c: np.ndarray = None
    kind = "AddConst"

    def forward(self, x):
        return x + self.c

    def describe(self):
        return f"c{list(np.shape(self.c))}"

    def interval(self, bounds):
        lo, hi = bounds[0] + self.c, bounds[1] + self.c
        return widen(lo, hi, self.step_error(mag(lo, hi)))

    def back_substitute(self, L, bounds, const, ctx):
        const -= rowdot(np.abs(L), self._out_error(bounds))
        const += L @ _const(self.c, ctx.graph.shapes[self.output])
        return [(self.inputs[0], L)]

    def milp_rows(self, enc, xs):
        return enc.linear(self, [(xs[0][:, None], np.ones((xs[0].size, 1)))],
                          _const(self.c, enc.shape(self.output)), self._milp_error(enc))

    def backward(self, g, xs):
        return [np.broadcast_to(g, xs[0].shape)]

    def grid_step(self, steps, bounds):
        if not grid.exact_inputs(self, steps):
            return None
        sc = grid.dyadic_step(self.c)
        m = max(grid.max_mag(bounds, self.output), grid.max_mag(bounds, self.inputs[0]))
        return None if sc is None else grid.fits(min(steps[0], sc), m, self.precision)


@dataclass(eq=False)
class MulConst(Elementwise):
    """``y = x * c`` (or ``x / c`` when ``divide``, kept apart because x/c ≠ x*(1/c) in floats)."""

    c: np.ndarray = None
    divide: bool = False
    kind = "MulConst"

    def forward(self, x):
        return x / self.c if self.divide else x * self.c

    def describe(self):
        return ("/" if self.divide else "*") + f"c{list(np.shape(self.c))}"

    def interval(self, bounds):
        lo, hi = bounds
        a = lo / self.c if self.divide else lo * self.c
        b = hi / self.c if self.divide else hi * self.c
        out_lo, out_hi = np.minimum(a, b), np.maximum(a, b)
        return widen(out_lo, out_hi, self.step_error(mag(out_lo, out_hi)))

    def back_substitute(self, L, bounds, const, ctx):
        const -= rowdot(np.abs(L), self._out_error(bounds))
        c = _const(self.c, ctx.graph.shapes[self.output])
        return [(self.inputs[0], L / c if self.divide else L * c)]

    def milp_rows(self, enc, xs):
        c = _const(self.c, enc.shape(self.output))
        return enc.linear(self, [(xs[0][:, None], (1.0 / c if self.divide else c)[:, None])], 0.0,
                          self._milp_error(enc))

    def backward(self, g, xs):
        return [g / self.c if self.divide else g * self.c]

    def grid_step(self, steps, bounds):
        if not grid.exact_inputs(self, steps):
            return None
        out_mag = grid.max_mag(bounds, self.output)
        if self.divide:
            return grid.fits(steps[0] / float(np.max(np.abs(self.c))), out_mag, self.precision) \
                if grid.is_pow2(self.c) else None
        sc = grid.dyadic_step(self.c)
        return None if sc is None else grid.fits(steps[0] * sc, out_mag, self.precision)


@dataclass(eq=False)
class CastFloat(MulConst):
    """A Cast to a narrower floating-point type (``precision``): ``x`` rounded to that type, or
    ``x`` itself — onnxruntime removes a Cast to float16 that meets the Cast back to float32 it
    inserts before a kernel without float16 support (docs/design.md §2.4).

    For the linear rules it is ``x·1`` computed in that type, i.e. the identity plus the type's
    rounding error (``step_error``); ``forward`` rounds (what a float16 input fed to the model
    is), and its interval covers both the rounded and the unrounded value."""

    kind = "CastFloat"

    def __post_init__(self):
        self.c = np.float64(1.0)
        self.divide = False

    def forward(self, x):
        return to_precision(x, self.precision)

    def error(self, m) -> np.ndarray:
        """Bound on ``|cast(x) − x|`` for ``|x| ≤ m``: one rounding to the type."""
        return numerics.rounding_error(self.precision, m)

    step_error = error

    def describe(self):
        return f"to {self.precision}"

    def interval(self, bounds):  # monotone rounding, or none where onnxruntime elides it
        lo, hi = bounds
        return np.minimum(lo, self.forward(lo)), np.maximum(hi, self.forward(hi))


class TwoTensor(Elementwise):
    """``a + sign·b`` of two computed tensors."""

    sign = 1.0

    def interval(self, bounds):
        (alo, ahi), (blo, bhi) = bounds
        lo, hi = (alo + blo, ahi + bhi) if self.sign > 0 else (alo - bhi, ahi - blo)
        return widen(lo, hi, self.step_error(mag(lo, hi)))

    def back_substitute(self, L, bounds, const, ctx):
        const -= rowdot(np.abs(L), self._out_error(bounds))
        return [(self.inputs[0], L), (self.inputs[1], self.sign * L)]

    def milp_rows(self, enc, xs):
        n = xs[0].size
        return enc.linear(self, [(xs[0][:, None], np.ones((n, 1))), (xs[1][:, None], np.full((n, 1), self.sign))],
                          0.0, self._milp_error(enc))

    def backward(self, g, xs):
        return [g, self.sign * g]

    def grid_step(self, steps, bounds):
        if not grid.exact_inputs(self, steps):
            return None
        m = max(grid.max_mag(bounds, n) for n in (self.output,) + tuple(self.inputs))
        return grid.fits(min(steps), m, self.precision)


@dataclass(eq=False)
class Add(TwoTensor):
    """Sum of two variable tensors."""

    kind = "Add"

    def forward(self, a, b):
        return a + b


@dataclass(eq=False)
class Sub(TwoTensor):
    """Difference of two variable tensors (the heart of a difference model)."""

    kind = "Sub"
    sign = -1.0

    def forward(self, a, b):
        return a - b


class Movement(Op):
    """Data movement: exact, monotone, elementwise in what it moves."""

    def interval(self, bounds):
        if len(self.inputs) == 1:
            bounds = [bounds]
        return self.forward(*(b[0] for b in bounds)), self.forward(*(b[1] for b in bounds))

    def grid_step(self, steps, bounds):
        return min(steps) if grid.exact_inputs(self, steps) else None

    def back_substitute(self, L, bounds, const, ctx):
        """Scatter each output coefficient back onto the input element it came from."""
        source, offsets = ctx.index_maps(self)
        out = []
        for k, name in enumerate(self.inputs):
            coeff = np.zeros(L.shape[:2] + (offsets[k + 1] - offsets[k],))
            pick = (source >= offsets[k]) & (source < offsets[k + 1])
            np.add.at(coeff, (slice(None), slice(None), source[pick] - offsets[k]), L[:, :, pick])
            out.append((name, coeff))
        return out


@dataclass(eq=False)
class Reshape(Movement):
    """Reshape the per-sample part of the tensor (the batch axis is kept)."""

    shape: tuple[int, ...] = ()
    kind = "Reshape"

    def forward(self, x):
        return x.reshape((x.shape[0],) + tuple(self.shape))

    def describe(self):
        return str(list(self.shape))

    def back_substitute(self, L, bounds, const, ctx):
        return [(self.inputs[0], L)]

    def milp_rows(self, enc, xs):
        return xs[0]

    def backward(self, g, xs):
        return [g.reshape(xs[0].shape)]


@dataclass(eq=False)
class Concat(Movement):
    """Concatenate along a per-sample axis (``axis`` counts the batch axis, as in ONNX)."""

    axis: int = 1
    kind = "Concat"

    def forward(self, *xs):
        return np.concatenate(xs, axis=self.axis)

    def describe(self):
        return f"axis={self.axis}"

    def milp_rows(self, enc, xs):
        parts = [x.reshape(enc.shape(n)) for x, n in zip(xs, self.inputs)]
        return np.concatenate(parts, axis=self.axis - 1 if self.axis > 0 else self.axis).ravel()

    def backward(self, g, xs):
        cuts = np.cumsum([x.shape[self.axis] for x in xs])[:-1]
        return np.split(g, cuts, axis=self.axis)


@dataclass(eq=False)
class Gather(Movement):
    """Pick flat per-sample elements by index (used to tie the inputs of several networks)."""

    indices: np.ndarray = None
    shape: tuple[int, ...] = ()
    kind = "Gather"

    def forward(self, x):
        f = x.reshape(x.shape[0], -1)[:, self.indices]
        return f.reshape((x.shape[0],) + tuple(self.shape))

    def milp_rows(self, enc, xs):
        return xs[0][self.indices]

    def backward(self, g, xs):
        out = np.zeros((g.shape[0], int(np.prod(xs[0].shape[1:]))))
        np.add.at(out, (slice(None), self.indices), g.reshape(g.shape[0], -1))
        return [out.reshape(xs[0].shape)]
