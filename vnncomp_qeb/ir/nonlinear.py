"""Nonlinear operators that own all of their rules: exact semantics (``forward``), sound interval
bounds with onnxruntime's float error (``interval``), linear relaxations for back-substitution
(``back_substitute``), rows of the proof MILP (``milp_rows``) and the gradient the attacks follow
(``backward``). The analyses dispatch to these methods before their own per-kind rules, so an op
here is added in one place (docs/design.md §4).

- :class:`Smooth`: Sigmoid, Tanh, Exp, Log, Sqrt, Reciprocal, Softplus, Pow by a constant exponent —
  elementwise, monotone between known critical points, convex or concave between known
  inflection points: tangent and chord relaxations (CROWN's choice), constant bounds elsewhere.
- :class:`Compare`: ``Equal``/``Greater``/``Less``/… of a tensor with a constant, as 0/1.
- :class:`Select`: ``Where(c, a, b)`` on a 0/1 condition.
- :class:`Product`: ``a·b`` of two computed tensors (interval product; McCormick planes).
- :class:`Softmax`: along the last axis (interval bounds from the exponent differences).

Float error: onnxruntime's kernels for these functions are not correctly rounded (MLAS computes
Sigmoid and Tanh by rational approximations); each result is widened by ``REL·|y| + ABS``, which
is at least 90 times the largest deviation from float64 measured against onnxruntime 1.31 on
3·10^5 points per function (``tests/test_nonlinear.py`` measures it on every run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vnncomp_qeb import numerics
from vnncomp_qeb.ir.ops import Op

REL = 2.0**-12  # relative error allowance of a transcendental kernel's result
ABS = 2.0**-16  # ... and absolute (MLAS's Sigmoid is off by up to 1.7e-7 near 0)


def kernel_error(precision: str, y) -> np.ndarray:
    """Bound on onnxruntime's error in a transcendental result near ``y``: the kernel's own
    (``REL·|y| + ABS``, computed in float32 at least) plus, for a narrower type, the rounding
    of the result to it."""
    y = np.abs(np.asarray(y, dtype=np.float64))
    err = REL * y + ABS
    if precision in ("float16", "bfloat16"):
        with np.errstate(invalid="ignore"):
            err = err + numerics.rounding_error(precision, y * (1 + REL) + ABS)
    return err


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _const_terms(L: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Lower bound of ``L·y`` for ``y`` in [lo, hi] (B, R), with 0·∞ read as 0."""
    with np.errstate(invalid="ignore"):
        t = np.where(L > 0, L * lo[:, None, :], 0.0) + np.where(L < 0, L * hi[:, None, :], 0.0)
    return t.sum(axis=2)


class Nonlinear(Op):
    """Marker base: ``interval(*bounds)``, ``back_substitute``, ``milp_rows``, ``backward``."""

    owns_rules = True


# -- elementwise smooth functions ----------------------------------------------------------------
def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_FUNCS = {  # name → (f, f', critical points (extrema / poles), inflection points, domain low)
    "Sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x)), (), (0.0,), -np.inf),
    "Tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2, (), (0.0,), -np.inf),
    "Exp": (np.exp, np.exp, (), (), -np.inf),
    "Softplus": (_softplus, _sigmoid, (), (), -np.inf),
    "Log": (np.log, lambda x: 1.0 / x, (), (), 0.0),
    "Sqrt": (np.sqrt, lambda x: 0.5 / np.sqrt(x), (), (), 0.0),
}


@dataclass(eq=False)
class Smooth(Nonlinear):
    """``y = f(x)`` elementwise for a named smooth function (``Pow`` with ``exponent``)."""

    fn: str = "Sigmoid"
    exponent: float = 1.0
    kind = "Smooth"
    relaxes_input = True  # its relaxation tightens with its input's bounds: refine them first

    # -- the function and its shape ------------------------------------------------------------
    def f(self, x):
        with np.errstate(all="ignore"):
            if self.fn == "Pow":
                return np.power(x, self.exponent)
            if self.fn == "Reciprocal":
                return 1.0 / x
            return _FUNCS[self.fn][0](x)

    def df(self, x):
        with np.errstate(all="ignore"):
            if self.fn == "Pow":
                return self.exponent * np.power(x, self.exponent - 1)
            if self.fn == "Reciprocal":
                return -1.0 / (x * x)
            return _FUNCS[self.fn][1](x)

    def forward(self, x):
        return self.f(x)

    def describe(self):
        return f"{self.fn}" + (f" {self.exponent:g}" if self.fn == "Pow" else "")

    def _integer_power(self) -> bool:
        return self.fn == "Pow" and float(self.exponent).is_integer()

    def _points(self) -> tuple[tuple, tuple, float]:
        """(critical points, inflection points, lowest point of the domain)."""
        if self.fn == "Reciprocal":
            return (0.0,), (0.0,), -np.inf
        if self.fn != "Pow":
            return _FUNCS[self.fn][2:]
        p = self.exponent
        if self._integer_power():  # extremum (even) or pole (negative) at 0; odd powers inflect there
            return (0.0,), (() if p > 0 and p % 2 == 0 else (0.0,)), -np.inf
        return (0.0,), (), 0.0  # x^p for real p: x ≥ 0

    def _curvature(self, lo, hi):
        """+1 where f is convex on [lo, hi], −1 concave, 0 neither (or unknown): the sign of f''
        from its closed form, on intervals that do not contain 0 (every inflection and pole of
        these functions is at 0)."""
        side = np.where(lo >= 0, 1.0, np.where(hi <= 0, -1.0, 0.0))  # the side of 0, 0 if across
        if self.fn in ("Exp", "Softplus"):
            return np.ones_like(lo)
        if self.fn in ("Log", "Sqrt"):
            return np.where(lo >= 0, -1.0, 0.0)
        if self.fn in ("Sigmoid", "Tanh"):
            return -side
        if self.fn == "Reciprocal":
            return side
        p = float(self.exponent)
        if not self._integer_power():  # x^p on x ≥ 0 only: f'' = p(p − 1)·x^(p−2)
            return np.where(lo >= 0, np.sign(p * (p - 1)), 0.0)
        if p > 0 and p % 2 == 0:  # even powers: convex everywhere
            return np.ones_like(lo)
        parity = 1.0 if p % 2 == 0 else -1.0  # the sign of x^(p−2) for x < 0
        return np.where(side > 0, np.sign(p * (p - 1)), np.where(side < 0, np.sign(p * (p - 1)) * parity, 0.0))

    # -- intervals -----------------------------------------------------------------------------
    def _error(self, y):
        return kernel_error(self.precision, y)

    def interval(self, bounds):
        lo, hi = bounds
        crit, _, dom = self._points()
        with np.errstate(all="ignore"):
            # outside the domain onnxruntime returns NaN, which a later kernel may turn into any
            # number (a Relu's max(NaN, 0)): no bound holds for those elements
            nan_possible = lo < dom
            lo = np.maximum(lo, dom)
            a, b = self.f(lo), self.f(hi)
            out_lo, out_hi = np.minimum(a, b), np.maximum(a, b)
            for c in crit:
                inside = (lo <= c) & (hi >= c)
                if self.fn == "Reciprocal" or (self.fn == "Pow" and self.exponent < 0):
                    pole = inside  # 1/x near 0: unbounded on both sides
                    out_lo, out_hi = np.where(pole, -np.inf, out_lo), np.where(pole, np.inf, out_hi)
                else:
                    fc = self.f(np.float64(c))
                    out_lo = np.where(inside, np.minimum(out_lo, fc), out_lo)
                    out_hi = np.where(inside, np.maximum(out_hi, fc), out_hi)
            out_lo, out_hi = out_lo - self._error(out_lo), out_hi + self._error(out_hi)
            # beyond the largest float of the type onnxruntime computes in, it returns ±inf
            big = numerics.FINITE_MAX[self.precision]
            out_hi = np.where(out_hi > big, np.inf, out_hi)
            out_lo = np.where(out_lo < -big, -np.inf, out_lo)
        out_lo, out_hi = np.where(nan_possible, -np.inf, out_lo), np.where(nan_possible, np.inf, out_hi)
        return np.where(np.isnan(out_lo), -np.inf, out_lo), np.where(np.isnan(out_hi), np.inf, out_hi)

    # -- relaxation ----------------------------------------------------------------------------
    def relaxation(self, lo, hi, out_lo, out_hi):
        """``(aL, bL, aU, bU)`` with ``aL·x + bL ≤ y ≤ aU·x + bU`` on [lo, hi] (flat arrays):
        on a convex piece the chord above and the tangent at the midpoint below (a concave piece
        the other way round), the interval's constants where the shape is mixed or unbounded."""
        with np.errstate(all="ignore"):
            curv = self._curvature(lo, hi)
            finite = np.isfinite(lo) & np.isfinite(hi) & (hi > lo) & np.isfinite(out_lo) & np.isfinite(out_hi)
            fl, fh = self.f(lo), self.f(hi)
            chord = (fh - fl) / (hi - lo)
            chord_b = fl - chord * lo
            mid = (lo + hi) / 2
            tan = self.df(mid)
            tan_b = self.f(mid) - tan * mid
            ok = finite & np.isfinite(chord) & np.isfinite(tan) & np.isfinite(tan_b) & np.isfinite(chord_b)
            convex, concave = ok & (curv > 0), ok & (curv < 0)
            aL = np.where(convex, tan, np.where(concave, chord, 0.0))
            bL = np.where(convex, tan_b, np.where(concave, chord_b, out_lo))
            aU = np.where(convex, chord, np.where(concave, tan, 0.0))
            bU = np.where(convex, chord_b, np.where(concave, tan_b, out_hi))
            # float error of the kernel, and of our own evaluation of the lines
            m = np.maximum(np.abs(out_lo), np.abs(out_hi))
            err = np.where(np.isfinite(m), self._error(m) + 1e-12 * (np.abs(aL) + np.abs(aU)) * np.maximum(np.abs(lo), np.abs(hi)), 0.0)
            bL, bU = np.where(convex | concave, bL - err, bL), np.where(convex | concave, bU + err, bU)
        return aL, bL, aU, bU

    def back_substitute(self, L, bounds, const, ctx=None):
        lo, hi = (_flat(v) for v in bounds[self.inputs[0]])
        olo, ohi = (_flat(v) for v in bounds[self.output])
        aL, bL, aU, bU = self.relaxation(lo, hi, olo, ohi)
        Lp, Ln = np.maximum(L, 0), np.minimum(L, 0)
        const += _const_terms(Lp, bL, bL) + _const_terms(Ln, bU, bU)
        return [(self.inputs[0], Lp * aL[:, None, :] + Ln * aU[:, None, :])]

    def milp_rows(self, enc, xs):
        x = xs[0]
        lo, hi = enc.lohi(self.inputs[0])
        olo, ohi = enc.lohi(self.output)
        y = enc.fresh(self.output)
        aL, bL, aU, bU = (v[0] for v in self.relaxation(lo[None], hi[None], olo[None], ohi[None]))
        keep = np.isfinite(bL)
        enc.m.add_rows(np.stack([y[keep], x[keep]], 1), np.stack([np.ones(keep.sum()), -aL[keep]], 1),
                       bL[keep], np.full(keep.sum(), np.inf))
        keep = np.isfinite(bU)
        enc.m.add_rows(np.stack([y[keep], x[keep]], 1), np.stack([np.ones(keep.sum()), -aU[keep]], 1),
                       np.full(keep.sum(), -np.inf), bU[keep])
        return y

    def backward(self, g, xs):
        d = self.df(xs[0])
        return [g * np.where(np.isfinite(d), d, 0.0)]


# -- comparisons, selection --------------------------------------------------------------------
_CMP = {"Equal": np.equal, "Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal,
        "LessOrEqual": np.less_equal}


@dataclass(eq=False)
class Compare(Nonlinear):
    """``y = 1 if x ⋈ c else 0`` elementwise (``negate``: the opposite, for ``Not``)."""

    cmp: str = "Equal"
    c: np.ndarray = None
    negate: bool = False
    kind = "Compare"

    def forward(self, x):
        hit = _CMP[self.cmp](x, self.c)
        return (~hit if self.negate else hit).astype(np.float64)

    def describe(self):
        return f"{'not ' if self.negate else ''}{self.cmp} c{list(np.shape(self.c))}"

    def _always(self, lo, hi):
        """(always true, always false) over [lo, hi]."""
        c = np.broadcast_to(np.asarray(self.c, dtype=np.float64), lo.shape[1:])
        if self.cmp == "Equal":
            yes, no = (lo == c) & (hi == c), (hi < c) | (lo > c)
        elif self.cmp == "Greater":
            yes, no = lo > c, hi <= c
        elif self.cmp == "GreaterOrEqual":
            yes, no = lo >= c, hi < c
        elif self.cmp == "Less":
            yes, no = hi < c, lo >= c
        else:
            yes, no = hi <= c, lo > c
        return (no, yes) if self.negate else (yes, no)

    def interval(self, bounds):
        yes, no = self._always(*bounds)
        return np.where(yes, 1.0, 0.0), np.where(no, 0.0, 1.0)

    def back_substitute(self, L, bounds, const, ctx=None):
        olo, ohi = (_flat(v) for v in bounds[self.output])
        const += _const_terms(L, olo, ohi)
        return []

    def milp_rows(self, enc, xs):
        return enc.fresh(self.output)

    def backward(self, g, xs):
        return [np.zeros_like(xs[0])]


@dataclass(eq=False)
class Select(Nonlinear):
    """``Where(c, a, b)``: ``a`` where the 0/1 tensor ``c`` is 1, else ``b`` (inputs c, a, b)."""

    kind = "Select"

    def forward(self, c, a, b):
        return np.where(c > 0.5, a, b)

    def interval(self, bounds):
        (cl, ch), (al, ah), (bl, bh) = bounds
        yes, no = cl > 0.5, ch < 0.5
        lo = np.where(yes, al, np.where(no, bl, np.minimum(al, bl)))
        hi = np.where(yes, ah, np.where(no, bh, np.maximum(ah, bh)))
        return lo, hi

    def _decided(self, bounds):
        cl, ch = (_flat(v) for v in bounds[self.inputs[0]])
        return cl > 0.5, ch < 0.5

    def back_substitute(self, L, bounds, const, ctx=None):
        yes, no = self._decided(bounds)
        olo, ohi = (_flat(v) for v in bounds[self.output])
        open_ = ~(yes | no)
        const += _const_terms(L * open_[:, None, :], olo, ohi)
        return [(self.inputs[1], L * yes[:, None, :]), (self.inputs[2], L * no[:, None, :])]

    def milp_rows(self, enc, xs):
        y = enc.fresh(self.output)
        cl, ch = enc.lohi(self.inputs[0])
        for branch, take in ((xs[1], cl > 0.5), (xs[2], ch < 0.5)):
            n = int(take.sum())
            enc.m.add_rows(np.stack([y[take], branch[take]], 1), np.tile([1.0, -1.0], (n, 1)), np.zeros(n), np.zeros(n))
        return y

    def backward(self, g, xs):
        take = xs[0] > 0.5
        return [np.zeros_like(xs[0]), g * take, g * ~take]


# -- products ----------------------------------------------------------------------------------
@dataclass(eq=False)
class Product(Nonlinear):
    """``a·b`` of two computed tensors of one shape (one rounding: ``unit·|y|``)."""

    kind = "Product"

    def forward(self, a, b):
        return a * b

    def interval(self, bounds):
        (al, ah), (bl, bh) = bounds
        with np.errstate(invalid="ignore"):
            c = np.stack([al * bl, al * bh, ah * bl, ah * bh])
        c = np.where(np.isnan(c), 0.0, c)  # 0·∞ = 0 at a zero end
        lo, hi = c.min(axis=0), c.max(axis=0)
        lo, hi = lo - self._err(lo), hi + self._err(hi)
        big = numerics.FINITE_MAX[self.precision]  # past it onnxruntime's product is ±inf
        return np.where(lo < -big, -np.inf, lo), np.where(hi > big, np.inf, hi)

    def _err(self, y):
        """One rounding of the product to its type, underflow to zero included."""
        with np.errstate(invalid="ignore"):
            return numerics.rounding_error(self.precision, np.abs(y))

    def back_substitute(self, L, bounds, const, ctx=None):
        al, ah = (_flat(v) for v in bounds[self.inputs[0]])
        bl, bh = (_flat(v) for v in bounds[self.inputs[1]])
        olo, ohi = (_flat(v) for v in bounds[self.output])
        finite = np.isfinite(al) & np.isfinite(ah) & np.isfinite(bl) & np.isfinite(bh)
        z = lambda v: np.where(finite, v, 0.0)  # noqa: E731
        al, ah, bl, bh = z(al), z(ah), z(bl), z(bh)
        err = self._err(np.maximum(np.abs(olo), np.abs(ohi)))
        finite = finite & np.isfinite(err)
        err = np.where(np.isfinite(err), err, 0.0)
        # McCormick: y ≥ bl·a + al·b − al·bl (lower rows), y ≤ bh·a + al·b − al·bh (upper rows)
        Lp, Ln = np.maximum(L, 0) * finite[:, None, :], np.minimum(L, 0) * finite[:, None, :]
        const += _const_terms(Lp, -al * bl - err, -al * bl - err) + _const_terms(Ln, -al * bh + err, -al * bh + err)
        const += _const_terms(L * ~finite[:, None, :], olo, ohi)
        return [(self.inputs[0], Lp * bl[:, None, :] + Ln * bh[:, None, :]),
                (self.inputs[1], (Lp + Ln) * al[:, None, :])]

    def milp_rows(self, enc, xs):
        a, b = xs
        y = enc.fresh(self.output)
        al, ah = enc.lohi(self.inputs[0])
        bl, bh = enc.lohi(self.inputs[1])
        olo, ohi = enc.lohi(self.output)
        err = self._err(np.maximum(np.abs(olo), np.abs(ohi)))
        ok = np.isfinite(al) & np.isfinite(ah) & np.isfinite(bl) & np.isfinite(bh) & np.isfinite(err)
        err = np.where(ok, err, 0.0)
        n = int(ok.sum())
        cols = np.stack([y[ok], a[ok], b[ok]], 1)
        inf = np.full(n, np.inf)
        for ca, cb, const, lower in ((bl, al, -al * bl, True), (bh, ah, -ah * bh, True),
                                     (bh, al, -al * bh, False), (bl, ah, -ah * bl, False)):
            vals = np.stack([np.ones(n), -ca[ok], -cb[ok]], 1)
            if lower:
                enc.m.add_rows(cols, vals, const[ok] - err[ok], inf)
            else:
                enc.m.add_rows(cols, vals, -inf, const[ok] + err[ok])
        return y

    def backward(self, g, xs):
        return [g * xs[1], g * xs[0]]


# -- softmax -----------------------------------------------------------------------------------
@dataclass(eq=False)
class Softmax(Nonlinear):
    """Softmax along the last per-sample axis."""

    kind = "Softmax"

    def forward(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    @staticmethod
    def _exact(lo, hi):
        """Bounds of the exact softmax: ``y_i = 1 / Σ_j exp(x_j − x_i)`` is smallest with
        ``x_i`` low and the others high."""
        with np.errstate(over="ignore"):
            d_hi = hi[..., None, :] - lo[..., :, None]  # [..., i, j]: x_j − x_i at its largest
            d_lo = lo[..., None, :] - hi[..., :, None]
            eye = np.eye(lo.shape[-1], dtype=bool)
            s_hi = np.where(eye, 1.0, np.exp(d_hi)).sum(axis=-1)
            s_lo = np.where(eye, 1.0, np.exp(d_lo)).sum(axis=-1)
        return 1.0 / s_hi, 1.0 / s_lo

    def interval(self, bounds):
        y_lo, y_hi = self._exact(*bounds)
        return np.maximum(y_lo - kernel_error(self.precision, y_lo), 0.0), np.minimum(y_hi + kernel_error(self.precision, y_hi), 1.0)

    def back_substitute(self, L, bounds, const, ctx=None):
        """The smallest ``L·y`` over the exact box *and* the simplex ``Σ y = 1`` of each group
        (a greedy fill, exact for this small LP), less the kernel's float error."""
        lo, hi = self._exact(*bounds[self.inputs[0]])
        B, R = L.shape[:2]
        k = lo.shape[-1]
        lo, hi = lo.reshape(B, 1, -1, k), hi.reshape(B, 1, -1, k)
        Lg = L.reshape(B, R, -1, k)
        order = np.argsort(Lg, axis=-1)
        Ls = np.take_along_axis(Lg, order, axis=-1)
        cap = np.take_along_axis(np.broadcast_to(hi - lo, Lg.shape), order, axis=-1)
        budget = np.maximum(1.0 - lo.sum(axis=-1, keepdims=True), 0.0)
        before = np.cumsum(cap, axis=-1) - cap
        amount = np.clip(budget - before, 0.0, cap)
        value = (Lg * lo).sum(axis=-1) + (Ls * amount).sum(axis=-1)
        err = (np.abs(Lg) * kernel_error(self.precision, hi)).sum(axis=-1)
        const += (value - err - 1e-12 * np.abs(value)).sum(axis=-1)
        return []

    def milp_rows(self, enc, xs):
        return enc.fresh(self.output)

    def backward(self, g, xs):
        y = self.forward(xs[0])
        return [y * (g - (g * y).sum(axis=-1, keepdims=True))]


OWN_RULES = (Smooth, Compare, Select, Product, Softmax)
