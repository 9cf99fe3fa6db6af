"""Symbolic difference analysis for layered twins (NeuroDiff-style).

For paired layers ``z_k = W_k·a_{k−1} + b_k``, ``a_k = f(z_k)`` (float) and
``ẑ_k = Ŵ_k·â_{k−1} + b̂_k``, ``â_k = f̂(ẑ_k)`` (quantized), the differences
``Δz_k = z_k − ẑ_k`` and ``δ_k = a_k − â_k`` obey
``Δz_k = Ŵ_k·δ_{k−1} + (W_k − Ŵ_k)·a_{k−1} + (b_k − b̂_k)`` (linear) and
``δ_k = f(z_k) − f̂(z_k − Δz_k)``, relaxed linearly in ``Δz_k``: exactly ``Δz`` where both
activations are provably linear, 0 where both are clamped on the same side, chords of
``[min(0, Δz), max(0, Δz)]`` otherwise, plus the constant effect of different clamp ranges and
of rounding. The difference graph is then bounded by the same back-substitution as everything
else, with the float branch's bounds taken from the joint analysis. Differences are small when
Q has many bits, and this is where bounding N and Q apart (and subtracting) loses most.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from vnncomp_qeb.analysis.backsub import Bounds, Relaxations, exact_by_intervals, linear_bounds, rowdot
from vnncomp_qeb.analysis.interval import propagate_op
from vnncomp_qeb.ir.clamp import apply_relaxation
from vnncomp_qeb.ir.float_error import rounding_band, unit
from vnncomp_qeb.numerics import TINY_OF, UNIT
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.ir.twin import Twin, find_twins

_ACTS = (ops.Relu, ops.Clip, ops.FakeQuant, ops.Round)


@dataclass(eq=False)
class DiffActivation(ops.Op):
    """``δ = f(z) − f̂(ẑ)`` with ``ẑ = z − Δz``: the N activation ``act`` (None: identity) maps
    tensor ``z`` to ``a``, the Q activation ``qact`` maps ``zq`` to ``aq``; the single input is
    ``Δz``. Analysis only (no forward)."""

    act: ops.Op | None = None
    qact: ops.Op | None = None
    z: str = ""
    a: str = ""
    zq: str = ""
    aq: str = ""
    shape: tuple = ()  # per-sample shape of z (lays out the constants of affine steps in a chain)
    # the input is Δ' = (zk·z + zc) − (qk·ẑ + qc): each chain's affine steps (a BatchNormalization
    # after Q's quantized convolution) moved in front of its clamps (flat per element, or scalars)
    zk: object = 1.0
    zc: object = 0.0
    qk: object = 1.0
    qc: object = 0.0
    kind = "DiffActivation"

    def forward(self, dz):  # shapes only: the difference graph is never evaluated
        return np.zeros_like(dz)

    def back_substitute(self, L, bounds, const, ctx):
        return [(self.inputs[0], apply_relaxation(L, const, *ctx.relaxations.get(self, bounds)))]


@dataclass(eq=False)
class _Noise(ops.Op):
    """``v + e`` with ``|e| ≤ error(bounds)`` (flat, batched). Analysis only."""

    adds_error_only = True

    def forward(self, x):
        return x

    def error(self, bounds: Bounds) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def back_substitute(self, L, bounds, const, ctx=None):
        const -= rowdot(np.abs(L), self.error(bounds))
        return [(self.inputs[0], L)]

    def propagate(self, bounds: Bounds):
        lo, hi = bounds[self.inputs[0]]
        err = self.error(bounds).reshape(lo.shape)
        return lo - err, hi + err


@dataclass(eq=False)
class DiffMaxPool(ops.Op):
    """``max_w(a) − max_w(â)`` over each pooling window ``w`` of the activations' difference ``δ``
    (the single input): exactly ``δ_k`` where one element ``k`` is the largest in both branches
    on the whole box, else within ``[min_w δ, max_w δ]`` (with ``k = argmax a``:
    ``max a − max â ≤ a_k − â_k``; with ``j = argmax â``: ``≥ a_j − â_j``) and within the pools'
    own bounds. onnxruntime's MaxPool returns one of the window's values: no float error.
    Analysis only."""

    windows: np.ndarray = None  # (outputs, K): flat indices of each window in the pool's input
    a: str = ""
    aq: str = ""
    m: str = ""
    mq: str = ""
    kind = "DiffMaxPool"

    def forward(self, d):  # shapes only
        return np.zeros((d.shape[0], self.windows.shape[0]))

    def _picks(self, bounds: Bounds, name: str):
        lo, hi = bounds[name]
        return lo.reshape(lo.shape[0], -1)[:, self.windows], hi.reshape(hi.shape[0], -1)[:, self.windows]

    def _dominant(self, bounds: Bounds) -> np.ndarray:
        """(B, outputs): a window element that is the largest in both branches on the box, or −1."""
        both = None
        for name in (self.a, self.aq):
            lo, hi = self._picks(bounds, name)  # (B, outputs, K)
            order = np.argsort(hi, axis=2)
            top = np.take_along_axis(hi, order[..., -1:], axis=2)
            second = np.take_along_axis(hi, order[..., -2:-1], axis=2) if hi.shape[2] > 1 else np.full_like(top, -np.inf)
            others = np.where(np.arange(hi.shape[2]) == order[..., -1:], second, top)  # largest of the others
            dom = lo >= others
            both = dom if both is None else both & dom
        return np.where(both.any(axis=2), np.argmax(both, axis=2), -1)

    def propagate(self, bounds: Bounds):
        dlo, dhi = self._picks(bounds, self.inputs[0])
        k = self._dominant(bounds)
        kk = np.maximum(k, 0)[..., None]
        lo = np.where(k >= 0, np.take_along_axis(dlo, kk, axis=2)[..., 0], dlo.min(axis=2))
        hi = np.where(k >= 0, np.take_along_axis(dhi, kk, axis=2)[..., 0], dhi.max(axis=2))
        (ml, mu), (ql, qu) = ((v.reshape(v.shape[0], -1) for v in bounds[t]) for t in (self.m, self.mq))
        return np.maximum(lo, ml - qu), np.minimum(hi, mu - ql)

    def back_substitute(self, L, bounds, const, ctx=None):
        lo, hi = (v.reshape(v.shape[0], -1) for v in bounds[self.output])
        k = self._dominant(bounds)
        exact = k >= 0
        Lx = np.where(exact[:, None, :], L, 0.0)  # exact outputs pass δ_k through
        Lc = L - Lx  # the others: their interval
        with np.errstate(invalid="ignore"):
            const += (np.where(Lc > 0, Lc * lo[:, None, :], 0.0) + np.where(Lc < 0, Lc * hi[:, None, :], 0.0)).sum(axis=2)
        coeff = np.zeros(L.shape[:2] + (int(np.prod(bounds[self.inputs[0]][0].shape[1:])),))
        idx = self.windows[np.arange(self.windows.shape[0])[None, :], np.maximum(k, 0)]  # (B, outputs)
        for b in range(L.shape[0]):  # one scatter per box (boxes differ in which outputs are exact)
            cols = np.flatnonzero(exact[b])
            np.add.at(coeff[b], (slice(None), idx[b, cols]), Lx[b][:, cols])
        return [(self.inputs[0], coeff)]


@dataclass(eq=False)
class Float32Noise(_Noise):
    """``Δz + e`` where ``|e|`` bounds the float error of computing the paired affine layers
    (and the final subtraction) separately, as onnxruntime does."""

    layers: tuple = ()
    scales: tuple = (1.0, 1.0)  # each layer's error counts scaled (the layer's chain's affine factor)
    sub_precision: str = "float32"
    kind = "Float32Noise"

    def error(self, bounds: Bounds) -> np.ndarray:
        err = sum(np.abs(k) * a.float_error(bounds) for a, k in zip(self.layers, self.scales))
        mag = np.maximum(np.abs(bounds[self.inputs[0]][0]), np.abs(bounds[self.inputs[0]][1]))
        # the subtraction
        return err + UNIT[self.sub_precision] * mag.reshape(mag.shape[0], -1) + TINY_OF[self.sub_precision]


@dataclass(eq=False)
class CastNoise(_Noise):
    """``v + e`` with ``|e|`` bounding ``x − cast(x)`` for the cast's input ``x``: the difference a
    cast in one branch makes (Q's input cast to float16 where N reads ``x`` as it is — then ``v``
    is 0 —, or a float16 output rounded by the file)."""

    cast: ops.Op = None
    kind = "CastNoise"

    def error(self, bounds: Bounds) -> np.ndarray:
        lo, hi = bounds[self.cast.inputs[0]]
        mag = np.maximum(np.abs(lo), np.abs(hi)).reshape(lo.shape[0], -1)
        return self.cast.error(mag)


@dataclass(eq=False)
class DynamicNoise(_Noise):
    """``Δz − Ŵ·e`` where ``e = r − â`` is the rounding of a runtime-scaled quantizer
    (:class:`~vnncomp_qeb.ir.dynamic_quant.DynamicQuant`) in front of Q's affine layer ``layer``:
    ``|e| ≤ E`` elementwise, E from the bounds of the quantizer's input."""

    quant: ops.Op = None
    layer: ops.Affine = None
    kind = "DynamicNoise"

    def error(self, bounds: Bounds) -> np.ndarray:
        from vnncomp_qeb.ir.dynamic_quant import noise_bound

        E = noise_bound(*bounds[self.quant.inputs[0]])
        return E[:, None] * self.column_norms[None, :]

    @cached_property
    def column_norms(self) -> np.ndarray:
        """``Σ_i |Ŵ_ij|`` per output: the weight of each input's noise (fixed, computed once)."""
        return np.asarray(abs(self.layer.W).sum(axis=0)).reshape(-1)


def _clamp_form(op: ops.Op, lo: np.ndarray, hi: np.ndarray):
    """(a, b, e): the clamp-like op is within ``e`` of ``clamp(x, a, b)`` (real units) on [lo, hi]."""
    s, a, b, rounding = op.clamp_params()
    if not rounding:  # Relu, Clip: scale 1, exact
        return a, b, 0.0
    s = np.asarray(s, dtype=np.float64)
    t = np.maximum(np.abs(lo), np.abs(hi)) / s
    h_lo, h_hi = rounding_band(op, t)
    e = s * np.maximum(h_lo, h_hi) + unit(op) * np.abs(s) * (t + 1)
    return s * a, s * b, e


def _chain_form(op: ops.Op | tuple | None, lo: np.ndarray, hi: np.ndarray, shape: tuple):
    """(k, c, a, b, e): the activation (one op, a chain of them, or None) is within ``e`` of
    ``clamp(k·x + c, a, b)`` (real units, per element of the flat tensor) for x in [lo, hi] (B, n).
    Clamps compose and their errors add (a clamp is 1-Lipschitz); an elementwise affine step
    (a BatchNormalization's scale and shift) moves into ``k, c`` and the clamp's ends."""
    k, c, a, b, e = 1.0, 0.0, -np.inf, np.inf, 0.0
    chain = () if op is None else op if isinstance(op, tuple) else (op,)
    for o in chain:
        u_lo, u_hi = np.minimum(k * lo, k * hi) + c, np.maximum(k * lo, k * hi) + c
        v_lo, v_hi = np.clip(u_lo, a, b) - e, np.clip(u_hi, a, b) + e  # the chain's value so far
        if isinstance(o, ops.AddConst):
            d = np.broadcast_to(np.asarray(o.c, dtype=np.float64), shape).reshape(-1)
            c, a, b = c + d, a + d, b + d
            e = e + o.step_error(np.maximum(np.abs(v_lo + d), np.abs(v_hi + d)))
        elif isinstance(o, ops.MulConst):
            m = np.broadcast_to(np.asarray(o.c, dtype=np.float64), shape).reshape(-1)
            m = 1.0 / m if o.divide else m
            with np.errstate(invalid="ignore"):  # 0·inf where m = 0: the value is 0 there
                na, nb = np.where(m >= 0, m * a, m * b), np.where(m >= 0, m * b, m * a)
            na, nb = np.where(m == 0, 0.0, na), np.where(m == 0, 0.0, nb)
            k, c, a, b = m * k, m * c, na, nb
            e = np.abs(m) * e + o.step_error(np.maximum(np.abs(m * v_lo), np.abs(m * v_hi)))
        else:
            oa, ob, oe = _clamp_form(o, v_lo, v_hi)
            a, b, e = np.clip(a, oa, ob), np.clip(b, oa, ob), e + oe
    return k, c, a, b, e


def chain_affine(act, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(k, c), flat: the affine steps of an activation chain composed (``k·x + c``), the clamps
    in between moving only their ends (:func:`_chain_form`)."""
    n = int(np.prod(shape, dtype=np.int64))
    k, c = np.ones(n), np.zeros(n)
    for o in () if act is None else act if isinstance(act, tuple) else (act,):
        if isinstance(o, ops.AddConst):
            c = c + np.broadcast_to(np.asarray(o.c, dtype=np.float64), shape).reshape(-1)
        elif isinstance(o, ops.MulConst):
            m = np.broadcast_to(np.asarray(o.c, dtype=np.float64), shape).reshape(-1)
            m = 1.0 / m if o.divide else m
            k, c = m * k, m * c
    return k, c


def _transformed(op: DiffActivation, bounds: Bounds):
    """Bounds (flat) of ``z' = zk·z + zc``, ``ẑ' = qk·ẑ + qc`` and of the input ``Δ' = z' − ẑ'``
    (where ``bounds`` lacks it: from the first two), and the clamp ends and errors of both chains
    (each chain within ``e`` of ``clamp(z', a, b)``)."""
    flat = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731
    zl, zu = (flat(v) for v in bounds[op.z])
    ql, qu = (flat(v) for v in bounds[op.zq])
    shape = op.shape or zl.shape[1:]
    _, _, a, b, e_n = _chain_form(op.act, zl, zu, shape)
    _, _, qa, qb, e_q = _chain_form(op.qact, ql, qu, shape)
    sort = lambda lo, hi, k, c: (np.minimum(k * lo, k * hi) + c, np.maximum(k * lo, k * hi) + c)  # noqa: E731
    zl, zu = sort(zl, zu, np.asarray(op.zk), np.asarray(op.zc))
    ql, qu = sort(ql, qu, np.asarray(op.qk), np.asarray(op.qc))
    dl, du = (flat(v) for v in bounds[op.inputs[0]]) if op.inputs[0] in bounds else (zl - qu, zu - ql)
    return (zl, zu), (ql, qu), (dl, du), (a, b, e_n), (qa, qb, e_q)


def _inexact(op: DiffActivation, bounds: Bounds) -> np.ndarray:
    """(B, n) bool: neurons whose δ relaxation is not exact from the z and ẑ bounds alone."""
    (zl, zu), (ql, qu), _, (a, b, _), (qa, qb, _) = _transformed(op, bounds)
    both_linear = (zl >= a) & (zu <= b) & (ql >= qa) & (qu <= qb) & (np.broadcast_to(a == qa, zl.shape))
    both_flat = ((zu <= a) & (qu <= qa)) | ((zl >= b) & (ql >= qb))
    return ~(both_linear | both_flat)


def _diff_relaxation(op: DiffActivation, bounds: Bounds):
    """``(aL, bL, aU, bU)`` with ``aL·Δ' + bL ≤ δ ≤ aU·Δ' + bU`` (flat, batched), in the chains'
    affine coordinates (``Δ'`` is the op's input; see :class:`DiffActivation`)."""
    flat = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731
    (zl, zu), (ql, qu), (dl, du), (a, b, e_n), (qa, qb, e_q) = _transformed(op, bounds)
    a, b, qa, qb = (np.broadcast_to(v, zl.shape) for v in (a, b, qa, qb))
    # g(z) − ĝ(ẑ) = [g(z) − g(ẑ)] + [g(ẑ) − ĝ(ẑ)]; the second part is piecewise linear in ẑ with
    # kinks at the four clamp ends: its range over [ql, qu] is that of its values at the ends of
    # the interval and at the kinks inside it
    g = lambda v, lo_, hi_: np.clip(v, lo_, hi_)  # noqa: E731
    at = np.stack([np.clip(v, ql, qu) for v in (ql, qu, a, b, qa, qb)])
    with np.errstate(invalid="ignore"):  # ∞ − ∞ on an unbounded ẑ: no bound there
        h = g(at, a, b) - g(at, qa, qb)
    c_lo, c_hi = h.min(axis=0), h.max(axis=0)
    c_lo, c_hi = np.where(np.isnan(c_lo), -np.inf, c_lo), np.where(np.isnan(c_hi), np.inf, c_hi)
    # g(z) − g(ẑ) with z − ẑ = Δz: exactly Δz, 0, or between min(0, Δz) and max(0, Δz)
    linear = (zl >= a) & (zu <= b) & (ql >= a) & (qu <= b)
    flat_low = (zu <= a) & (qu <= a)
    flat_high = (zl >= b) & (ql >= b)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where(du > dl, du - dl, 1.0)
        low_slope = np.where(dl >= 0, 0.0, np.where(du <= 0, 1.0, -dl / width))
        low_icpt = np.where((dl < 0) & (du > 0), dl * du / width, 0.0)
        up_slope = np.where(du <= 0, 0.0, np.where(dl >= 0, 1.0, du / width))
        up_icpt = np.where((dl < 0) & (du > 0), -dl * du / width, 0.0)
    low_slope = np.where(linear, 1.0, np.where(flat_low | flat_high, 0.0, low_slope))
    low_icpt = np.where(linear | flat_low | flat_high, 0.0, low_icpt)
    up_slope = np.where(linear, 1.0, np.where(flat_low | flat_high, 0.0, up_slope))
    up_icpt = np.where(linear | flat_low | flat_high, 0.0, up_icpt)
    # one side provably linear (ReluDiff's stable cases): with φ(v) = v − clamp(v, a, b),
    # monotone, N linear gives Δz + φ(ẑ), Q linear gives Δz − φ(z): slope 1, small offsets
    phi = lambda v: v - np.clip(v, a, b)  # noqa: E731
    with np.errstate(invalid="ignore"):
        chord_gap = np.where((dl < 0) & (du > 0), -2 * dl * du / width, 0.0)
        n_lin, q_lin = (zl >= a) & (zu <= b), (ql >= a) & (qu <= b)
        gap_n = np.where(n_lin, phi(qu) - phi(ql), np.inf)
        gap_q = np.where(q_lin, phi(zu) - phi(zl), np.inf)
    pick_n = ~linear & ~flat_low & ~flat_high & (gap_n < chord_gap) & (gap_n <= gap_q)
    pick_q = ~linear & ~flat_low & ~flat_high & ~pick_n & (gap_q < chord_gap)
    low_slope = np.where(pick_n | pick_q, 1.0, low_slope)
    up_slope = np.where(pick_n | pick_q, 1.0, up_slope)
    low_icpt = np.where(pick_n, phi(ql), np.where(pick_q, -phi(zu), low_icpt))
    up_icpt = np.where(pick_n, phi(qu), np.where(pick_q, -phi(zl), up_icpt))
    err = e_n + e_q
    aL, bL = low_slope, low_icpt + c_lo - err
    aU, bU = up_slope, up_icpt + c_hi + err
    # where the constant bounds of both activations are tighter, use them (slope 0)
    al, au = (flat(v) for v in bounds[op.a])
    ql_out, qu_out = (flat(v) for v in bounds[op.aq])
    const_lo, const_hi = al - qu_out, au - ql_out
    lin_width = np.maximum(aU * du + bU, aU * dl + bU) - np.minimum(aL * dl + bL, aL * du + bL)
    use_const = ~np.isfinite(lin_width) | (const_hi - const_lo <= lin_width)
    return (np.where(use_const, 0.0, aL), np.where(use_const, const_lo, bL),
            np.where(use_const, 0.0, aU), np.where(use_const, const_hi, bU))


def _is_chain_op(op: ops.Op) -> bool:
    """An op an activation chain may hold: a clamp or rounding, or an elementwise affine step
    (a BatchNormalization's scale and shift; not a cast: a branch's output cast is kept apart)."""
    return isinstance(op, _ACTS) or (isinstance(op, (ops.MulConst, ops.AddConst)) and not isinstance(op, ops.CastFloat))


def _chain(branch: list[ops.Op], i: int, src: str):
    """(the activation chain starting at ``branch[i]`` reading ``src`` — None, one op or a tuple —,
    index after it, its output)."""
    chain = []
    while i < len(branch) and _is_chain_op(branch[i]) and branch[i].inputs[0] == src:
        chain.append(branch[i])
        src = branch[i].output
        i += 1
    return (None if not chain else chain[0] if len(chain) == 1 else tuple(chain)), i, src


@dataclass(frozen=True, eq=False)
class _Pool:
    """A MaxPool as the loader writes it (``m ← m + relu(s − m)`` over each window's picks):
    the window elements' flat input indices (outputs, K), its ops, its output tensor."""

    windows: np.ndarray
    ops: tuple
    output: str


def _is_pick(op: ops.Op, src: str) -> bool:
    W = getattr(op, "W", None)
    return (isinstance(op, ops.Affine) and op.inputs == (src,) and op.b is None and op.sparse
            and W.nnz == W.shape[1] and np.array_equal(W.indptr, np.arange(W.shape[1] + 1)) and np.all(W.data == 1))


def _pool(branch: list[ops.Op], i: int, src: str):
    """(_Pool, index after it) when ``branch[i:]`` is a MaxPool of ``src``, else None."""
    if i >= len(branch) or not _is_pick(branch[i], src):
        return None
    picks, used, m = [branch[i]], [branch[i]], branch[i].output
    i += 1
    while len(branch) - i >= 4:
        s_, gap, up, mx = branch[i:i + 4]
        if not (_is_pick(s_, src) and isinstance(gap, ops.Sub) and gap.inputs == (s_.output, m)
                and isinstance(up, ops.Relu) and up.inputs == (gap.output,)
                and isinstance(mx, ops.Add) and mx.inputs == (m, up.output)):
            break
        picks.append(s_)
        used += [s_, gap, up, mx]
        m = mx.output
        i += 4
    if len(picks) < 2:
        return None
    windows = np.stack([np.asarray(p.W.indices, dtype=np.int64) for p in picks], axis=1)
    return _Pool(windows, tuple(used), m), i


def _stack(branch: list[ops.Op]):
    """[(Affine, activation — one op, a tuple of chained ones, or None —, runtime quantizer in
    front or None, MaxPool after the activation or None, activation after the pool or None)] of
    a plain layer stack, or None."""
    from vnncomp_qeb.ir.dynamic_quant import DynamicQuant

    layers, i = [], 0
    while i < len(branch):
        pre = branch[i] if isinstance(branch[i], DynamicQuant) else None
        i += pre is not None
        if i >= len(branch) or not isinstance(branch[i], ops.Affine) or (pre and branch[i].inputs[0] != pre.output):
            return None
        affine = branch[i]
        act, i, out = _chain(branch, i + 1, affine.output)
        pool, post = _pool(branch, i, out), None
        if pool is not None:
            pool, i = pool
            post, i, _ = _chain(branch, i, pool.output)
        layers.append((affine, act, pre, pool, post))
    return layers


def _has_affine(act) -> bool:
    """The activation chain holds an elementwise affine step."""
    return any(isinstance(o, (ops.MulConst, ops.AddConst)) for o in (() if act is None else act if isinstance(act, tuple) else (act,)))


def _act_out(affine: ops.Affine, act) -> str:
    """The tensor an affine map followed by its activation chain (or None) computes."""
    return (act[-1] if isinstance(act, tuple) else (act or affine)).output


def _out(layer) -> str:
    """The tensor a layer computes."""
    affine, act, _, pool, post = layer
    if pool is None:
        return _act_out(affine, act)
    return post[-1].output if isinstance(post, tuple) else (post.output if post is not None else pool.output)


def _reads(layer) -> str:
    """The tensor a layer (Affine, activation, quantizer in front) reads."""
    return (layer[2] or layer[0]).inputs[0]


def _layers(twin: Twin):
    """(input quantizer of Q or None, N layers, Q layers) when both branches are layer stacks
    that read the same tensor; Q may quantize its input and its output where N does not, and
    quantize a layer's input at run time (dynamic quantization)."""
    q_ops = list(twin.quant_ops)
    q_input = None
    if (q_ops and isinstance(q_ops[0], (ops.FakeQuant, ops.CastFloat)) and len(q_ops) > 1
            and q_ops[1].inputs[0] == q_ops[0].output):
        q_input, q_ops = q_ops[0], q_ops[1:]
    f_ops = list(twin.float_ops)
    out_casts = []  # a branch whose output the file rounds to a narrower type (float16 outputs)
    for branch in (f_ops, q_ops):
        if len(branch) > 1 and isinstance(branch[-1], ops.CastFloat) and branch[-1].inputs[0] == branch[-2].output:
            out_casts.append(branch.pop())
    n_layers, q_layers = _stack(f_ops), _stack(q_ops)
    if not n_layers or not q_layers or len(n_layers) != len(q_layers) or n_layers[-1][1] is not None:
        return None
    if n_layers[-1][3] is not None or any(layer[2] is not None for layer in n_layers):
        return None
    for (fa, f_act, _, f_pool, f_post), (qa, q_act, q_pre, q_pool, q_post) in zip(n_layers, q_layers):
        if fa.W.shape != qa.W.shape or (f_pool is None) != (q_pool is None):
            return None
        # affine steps move in front of a chain only where nothing else scales that layer's Δ
        if _has_affine(f_post) or _has_affine(q_post) or (q_pre is not None and _has_affine(q_act)):
            return None
        if f_pool is not None and not np.array_equal(f_pool.windows, q_pool.windows):
            return None
    source = q_input.inputs[0] if q_input is not None else _reads(q_layers[0])
    if _reads(n_layers[0]) != source:
        return None
    for k in range(1, len(n_layers)):  # each layer reads the previous one's output
        if _reads(n_layers[k]) != _out(n_layers[k - 1]) or _reads(q_layers[k]) != _out(q_layers[k - 1]):
            return None
    return q_input, n_layers, q_layers, out_casts


def _scaled(W, k: np.ndarray):
    """``W`` with each output column ``j`` scaled by ``k[j]`` (sparse patch form kept sparse)."""
    if np.all(k == 1.0):
        return W
    if isinstance(W, np.ndarray):
        return W * k[None, :]
    import scipy.sparse as sp

    return sp.csc_array(W.multiply(k[None, :]))


class DifferenceGraph:
    """The difference graph of a layered twin: the float branch plus Δz / δ per layer."""

    def __init__(self, graph: Graph, twin: Twin, layers):
        q_input, n_layers, q_layers, out_casts = layers
        self.twin = twin
        new_ops: list[ops.Op] = list(twin.shared_ops)
        shapes = dict(graph.shapes)
        delta = None
        if q_input is not None:  # δ0 = x − fq(x): Q quantizes (or casts) the input N reads as it is
            x = q_input.inputs[0]
            zero = ops.MulConst((x,), "Δz_in", c=np.float64(0.0), precision="float64")
            if isinstance(q_input, ops.CastFloat):
                act = CastNoise((zero.output,), "δ_in", cast=q_input)
            else:
                act = DiffActivation((zero.output,), "δ_in", act=None, qact=q_input, z=x, a=x, zq=x,
                                     aq=q_input.output)
            shapes[zero.output] = shapes[act.output] = shapes[x]
            new_ops += [zero, act]
            delta = act.output
        for k, ((fa, f_act, _, f_pool, f_post), (qa, q_act, q_pre, q_pool, q_post)) in enumerate(zip(n_layers, q_layers)):
            new_ops.append(fa)
            if f_act is not None:
                new_ops += list(f_act) if isinstance(f_act, tuple) else [f_act]
            # Δ' = (zk·z + zc) − (qk·ẑ + qc): each chain's affine steps moved in front of it (both
            # 1 and 0 unless a BatchNormalization follows a quantized convolution in one branch)
            zk, zc = chain_affine(f_act, shapes[fa.output])
            qk, qc = chain_affine(q_act, shapes[fa.output])
            n_out = fa.W.shape[1]
            bias = (zk * (0 if fa.b is None else np.broadcast_to(fa.b, (n_out,))) + zc
                    - qk * (0 if qa.b is None else np.broadcast_to(qa.b, (n_out,))) - qc)
            # virtual ops (nothing computes them): float64; Float32Noise carries the real errors
            own = ops.Affine(fa.inputs, f"Δlin{k}", W=_scaled(fa.W, zk) - _scaled(qa.W, qk),
                             b=np.broadcast_to(bias, (n_out,)).copy(), precision="float64")
            shapes[own.output] = shapes[fa.output]
            new_ops.append(own)
            dz = own.output
            if delta is not None:
                carried = ops.Affine((delta,), f"Δcarry{k}", W=_scaled(qa.W, qk), b=None, precision="float64")
                total = ops.Add((own.output, carried.output), f"Δsum{k}", precision="float64")
                shapes[carried.output] = shapes[total.output] = shapes[fa.output]
                new_ops += [carried, total]
                dz = total.output
            noise = Float32Noise((dz,), f"Δz{k}", layers=(fa, qa), scales=(zk, qk), sub_precision=twin.sub.precision)
            shapes[noise.output] = shapes[fa.output]
            new_ops.append(noise)
            dz = noise.output
            if q_pre is not None:  # Q's layer reads its input rounded at a runtime scale
                noise = DynamicNoise((dz,), f"Δz_dyn{k}", quant=q_pre, layer=qa)
                shapes[noise.output] = shapes[fa.output]
                new_ops.append(noise)
                dz = noise.output
            if q_act is not None or f_act is not None:  # None: that side is the identity
                act = DiffActivation((dz,), f"δ{k}", act=f_act, qact=q_act, z=fa.output,
                                     a=_act_out(fa, f_act), zq=qa.output, aq=_act_out(qa, q_act),
                                     shape=tuple(shapes[fa.output]), zk=zk, zc=zc, qk=qk, qc=qc)
                shapes[act.output] = shapes[fa.output]
                new_ops.append(act)
                dz = act.output
            if f_pool is not None:  # max(a) − max(â) over each window, then the chains after it
                new_ops += list(f_pool.ops)
                pool = DiffMaxPool((dz,), f"δpool{k}", windows=f_pool.windows, a=_act_out(fa, f_act),
                                   aq=_act_out(qa, q_act), m=f_pool.output, mq=q_pool.output)
                shapes[pool.output] = shapes[f_pool.output]
                new_ops.append(pool)
                dz = pool.output
                if f_post is not None:
                    new_ops += list(f_post) if isinstance(f_post, tuple) else [f_post]
                if f_post is not None or q_post is not None:
                    act = DiffActivation((dz,), f"δpost{k}", act=f_post, qact=q_post, z=f_pool.output,
                                         a=_out((fa, f_act, None, f_pool, f_post)), zq=q_pool.output,
                                         aq=_out((qa, q_act, None, q_pool, q_post)), shape=tuple(shapes[f_pool.output]))
                    shapes[act.output] = shapes[f_pool.output]
                    new_ops.append(act)
                    dz = act.output
            delta = dz
        for k, cast in enumerate(out_casts):  # N − cast(Q) = (N − Q) + (Q − cast(Q)), and so for N
            noise = CastNoise((dz,), f"δ_out{k}", cast=cast)
            shapes[noise.output] = shapes[dz]
            new_ops.append(noise)
            dz = noise.output
        self.output = dz
        self.graph = Graph(graph.input_name, graph.input_shape, new_ops, [self.output], shapes=shapes, name="Δ")


def difference_graph(graph: Graph) -> DifferenceGraph | None:
    """The difference graph of the graph's twin, when it has exactly one layered twin whose
    difference is the graph's only output."""
    twins = find_twins(graph)
    if len(twins) != 1 or graph.outputs != [twins[0].sub.output]:
        return None
    layers = _layers(twins[0])
    return DifferenceGraph(graph, twins[0], layers) if layers else None


class _DiffRelaxations(Relaxations):
    def get(self, op, bounds):
        if isinstance(op, DiffActivation):
            if id(op) not in self.cache:
                self.cache[id(op)] = _diff_relaxation(op, bounds)
            return self.cache[id(op)]
        return super().get(op, bounds)


class DifferenceAnalysis:
    """Bounds on the difference graph of one batch of boxes, from the original graph's refined
    bounds (every N and Q tensor); ``rows(A)`` bounds ``A·(N − Q)`` as the twin computes it."""

    def __init__(self, dg: DifferenceGraph, bounds: Bounds, relaxations: Relaxations, symbolic: bool = True):
        """``symbolic=False`` propagates the differences by intervals only (QEBVerif's Con)."""
        self.dg = dg
        g = dg.graph
        local: Bounds = dict(bounds)
        exact = exact_by_intervals(g)
        rel = _DiffRelaxations()
        rel.cache = dict(relaxations.cache)
        rel.errors = dict(relaxations.errors)
        for op in g.ops:
            if op.output in bounds:
                continue  # float branch and shared ops: already bounded
            if isinstance(op, DiffActivation):
                dz = op.inputs[0]
                # Δ' = z' − ẑ' lies within the difference of their bounds (the chains' coordinates)
                (zl, zu), (ql, qu), *_ = _transformed(op, bounds)
                old_lo, old_hi = local[dz]
                shape = old_lo.shape
                B = shape[0]
                new_lo = np.maximum(old_lo.reshape(B, -1), zl - qu)
                new_hi = np.minimum(old_hi.reshape(B, -1), zu - ql)
                # refine Δz only where the δ relaxation depends on it (not exact), per box
                mine = _inexact(op, bounds) & (dz not in exact)
                rows = np.flatnonzero(mine.any(axis=0))
                if rows.size and symbolic:
                    lo, hi = linear_bounds(g, local, rel, dz, np.eye(new_lo.shape[1])[rows])
                    m = mine[:, rows]
                    new_lo[:, rows] = np.where(m, np.maximum(new_lo[:, rows], lo), new_lo[:, rows])
                    new_hi[:, rows] = np.where(m, np.minimum(new_hi[:, rows], hi), new_hi[:, rows])
                local[dz] = (new_lo.reshape(shape), new_hi.reshape(shape))
                aL, bL, aU, bU = rel.get(op, local)
                dlo, dhi = (v.reshape(v.shape[0], -1) for v in local[dz])
                local[op.output] = ((np.minimum(aL * dlo, aL * dhi) + bL).reshape(shape),
                                    (np.maximum(aU * dlo, aU * dhi) + bU).reshape(shape))
            elif isinstance(op, (_Noise, DiffMaxPool)):
                local[op.output] = op.propagate(local)
            else:
                local[op.output] = propagate_op(op, [local[n] for n in op.inputs])
        self.local, self.rel = local, rel

    def rows(self, A: np.ndarray, input_coeffs: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (B, rows) of ``A·y`` where y is the twin's output N − Q
        (``input_coeffs`` as in :func:`linear_bounds`)."""
        g, out = self.dg.graph, self.dg.output
        C = A * self.dg.twin.sign
        lo, hi = linear_bounds(g, self.local, self.rel, out, C, input_coeffs)
        flat_lo, flat_hi = (v.reshape(v.shape[0], -1) for v in self.local[out])
        box_lo = flat_lo @ np.maximum(C, 0).T + flat_hi @ np.minimum(C, 0).T
        box_hi = flat_hi @ np.maximum(C, 0).T + flat_lo @ np.minimum(C, 0).T
        return np.maximum(lo, box_lo), np.minimum(hi, box_hi)

    def interval_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds (B, m) of the twin's output from the propagated difference intervals."""
        lo, hi = (v.reshape(v.shape[0], -1) for v in self.local[self.dg.output])
        return (lo, hi) if self.dg.twin.sign > 0 else (-hi, -lo)

    def output_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds (B, m) of the twin's output."""
        return self.rows(np.eye(int(np.prod(self.dg.graph.shapes[self.dg.output]))))
