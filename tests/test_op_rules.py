"""Per-op property tests of the rules every linear and clamp op owns (``ir/linear.py``,
``ir/clamp.py``): a failure names the op. For each op, in a tiny graph over a box:

- ``interval``: the exact output at sampled points (corners included) lies inside;
- ``back_substitute``: the back-substituted linear bounds hold at those points, and for a linear
  op its coefficients on the input are the dense Jacobian of the graph;
- ``backward``: the gradient is the finite difference of the op's real-valued form (the
  identity inside the range for a rounding step: straight-through);
- ``milp_rows``: the proof MILP with the input fixed to a sampled point contains the output;
- ``grid_step``: where the op says its output lies on a grid, sampled outputs do.
"""

from __future__ import annotations

import numpy as np
import pytest

from vnncomp_qeb.analysis.backsub import Relaxations, linear_bounds
from vnncomp_qeb.analysis.dra import refined_bounds
from vnncomp_qeb.analysis.interval import interval_bounds
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.ir.patches import conv_matrix
from vnncomp_qeb.milp.backends import OPTIMAL, HighsBackend
from vnncomp_qeb.milp.encode import PROOF, encode

R = np.random.default_rng(11)
W6 = np.round(R.normal(size=(6, 4)) * 64) / 64  # dyadic: the grid rules make a claim
W6b = np.round(R.normal(size=(6, 4)) * 64) / 64
KERNEL = R.normal(size=(2, 1, 2, 2))


def _pre(scale=1.0):
    """x → z = scale·(x W + b): a hidden tensor with both signs for the clamps to act on."""
    return ops.Affine(("x",), "z", W=scale * W6, b=scale * R.normal(size=4) * 0.1)


def _two():
    return [ops.Affine(("x",), "a", W=W6), ops.Affine(("x",), "b", W=W6b)]


# FakeQuant's real form, straight through where the code is strictly inside its range
FQ_LO, FQ_HI = 0.05 * (0 - 3 + 0.5), 0.05 * (40 - 3 - 0.5)
S, Z = np.array([0.02, 0.05, 0.1, 0.2]), np.array([0.0, 5.0, -3.0, 1.0])
PC_LO, PC_HI = S * (-8 - Z + 0.5), S * (7 - Z - 0.5)

# name → (input shape, ops before the op, the op, linear?, (real-valued form of the op for the
# gradient, its kinks))
CASES = {
    "Affine": ((6,), [], ops.Affine(("x",), "y", W=W6, b=R.normal(size=4)), True, None),
    "Affine-conv": ((1, 3, 3), [], ops.Affine(("x",), "y", W=conv_matrix(KERNEL, (1, 3, 3))[0], b=None), True, None),
    "AddConst": ((6,), [], ops.AddConst(("x",), "y", c=np.round(R.normal(size=6) * 32) / 32), True, None),
    "MulConst": ((6,), [], ops.MulConst(("x",), "y", c=R.normal(size=6)), True, None),
    "MulConst-divide": ((6,), [], ops.MulConst(("x",), "y", c=np.float64(3.0), divide=True), True, None),
    "CastFloat-float16": ((6,), [], ops.CastFloat(("x",), "y", precision="float16"), False, (lambda x: x, [])),
    "Add": ((6,), _two(), ops.Add(("a", "b"), "y"), True, None),
    "Sub": ((6,), _two(), ops.Sub(("a", "b"), "y"), True, None),
    "Reshape": ((2, 3), [], ops.Reshape(("x",), "y", shape=(3, 2)), True, None),
    "Concat": ((6,), _two(), ops.Concat(("a", "b"), "y", axis=1), True, None),
    "Gather": ((6,), [], ops.Gather(("x",), "y", indices=np.array([5, 0, 0, 3]), shape=(4,)), True, None),
    "Relu": ((6,), [_pre()], ops.Relu(("z",), "y"), False, (None, [0.0])),
    "Clip": ((6,), [_pre()], ops.Clip(("z",), "y", lo=-0.3, hi=0.4), False, (None, [-0.3, 0.4])),
    "Round-half_even": ((6,), [_pre(3.0)], ops.Round(("z",), "y", mode="half_even"), False, (lambda x: x, [])),
    "Round-floor": ((6,), [_pre(3.0)], ops.Round(("z",), "y", mode="floor"), False, (lambda x: x, [])),
    "FakeQuant": ((6,), [_pre()], ops.FakeQuant(("z",), "y", scale=np.float64(0.05), zero_point=np.float64(3.0),
                                               qmin=0.0, qmax=40.0), False,
                  (lambda x: np.clip(x, FQ_LO, FQ_HI), [FQ_LO, FQ_HI])),
    "FakeQuant-per-channel": ((6,), [_pre()], ops.FakeQuant(("z",), "y", scale=S, zero_point=Z, qmin=-8.0, qmax=7.0,
                                                           mode="half_away"), False,
                              (lambda x: np.clip(x, PC_LO, PC_HI), [PC_LO, PC_HI])),
}


def _graph(name):
    shape, pre, op, _, _ = CASES[name]
    return Graph("x", shape, list(pre) + [op], [op.output]), op


def _box_and_points(g, n=300):
    c = R.uniform(-1, 1, g.input_size)
    r = R.uniform(0.2, 0.6, g.input_size)
    lo, hi = c - r, c + r
    corners = np.where(R.integers(0, 2, size=(16, g.input_size)) == 1, lo, hi)
    pts = np.concatenate([R.uniform(lo, hi, size=(n, g.input_size)), corners, [lo, hi]])
    return lo, hi, pts


def _values(g, pts, name):
    return g.run(pts.reshape((-1,) + tuple(g.input_shape)), keep_all=True)[name].reshape(len(pts), -1)


@pytest.mark.parametrize("name", CASES)
def test_interval_and_back_substitution_hold_at_sampled_points(name):
    g, op = _graph(name)
    for _ in range(3):
        lo, hi, pts = _box_and_points(g)
        y = _values(g, pts, op.output)
        ib = interval_bounds(g, lo[None], hi[None], keep_all=True)[op.output]
        ilo, ihi = (v.reshape(1, -1) for v in ib)
        assert np.all(y >= ilo) and np.all(y <= ihi), f"{name}: interval rule"
        bounds, rel = refined_bounds(g, lo[None], hi[None])
        n_out = y.shape[1]
        coeffs: list = []
        llo, lhi = linear_bounds(g, bounds, rel, op.output, np.eye(n_out), coeffs)
        assert np.all(y >= llo) and np.all(y <= lhi), f"{name}: back-substitution rule"
        if CASES[name][3]:  # a linear graph: the coefficients are its Jacobian
            x0 = pts[0]
            f0 = _values(g, x0[None], op.output)[0]
            J = np.stack([_values(g, (x0 + e)[None], op.output)[0] - f0 for e in np.eye(g.input_size)], axis=1)
            np.testing.assert_allclose(coeffs[0][0, :n_out], J, atol=1e-9, err_msg=f"{name}: lower coefficients")
            np.testing.assert_allclose(-coeffs[0][0, n_out:], J, atol=1e-9, err_msg=f"{name}: upper coefficients")


@pytest.mark.parametrize("name", CASES)
def test_gradient_is_the_finite_difference_of_the_real_form(name):
    g, op = _graph(name)
    ref, kinks = CASES[name][4] or (None, [])
    ref = ref or op.forward
    shapes = [tuple(g.shapes[n]) if n != "x" else tuple(g.input_shape) for n in op.inputs]
    xs = [R.uniform(-0.9, 0.9, size=(2,) + s) for s in shapes]
    for k in kinks:  # where the gradient is defined (a rounding: away from its range's ends too)
        xs = [np.where(np.abs(x - k) < 0.02, k + 0.03, x) for x in xs]
    gout = R.normal(size=(2,) + tuple(g.shapes[op.output]))
    grads = op.backward(gout, xs)
    h = 1e-6
    for k, x in enumerate(xs):
        d = R.normal(size=x.shape)
        plus = [v + h * d if i == k else v for i, v in enumerate(xs)]
        minus = [v - h * d if i == k else v for i, v in enumerate(xs)]
        fd = ((ref(*plus) - ref(*minus)) * gout).sum() / (2 * h)
        assert abs(fd - (grads[k] * d).sum()) <= 1e-5 * (1 + abs(fd)), f"{name}: gradient rule, input {k}"


@pytest.mark.parametrize("name", CASES)
def test_proof_milp_contains_the_output_at_sampled_points(name):
    g, op = _graph(name)
    lo, hi, pts = _box_and_points(g, 3)
    bounds, _ = refined_bounds(g, lo[None], hi[None])
    enc = encode(g, bounds, PROOF)
    cols = np.asarray(enc.columns[op.output]).ravel()
    for x in pts[:4]:
        y = _values(g, x[None], op.output)[0]
        fixed = enc.model.restricted(enc.inputs, x, x)
        for j in range(min(cols.size, 4)):
            for sign in (1.0, -1.0):
                m = fixed.copy()
                m.set_objective(cols[j:j + 1], np.array([sign]))
                res = HighsBackend().solve(m, 10)
                assert res.status == OPTIMAL, f"{name}: MILP rows infeasible at a point of the box"
                assert sign * y[j] <= res.bound + 1e-7 * (1 + abs(y[j])), f"{name}: MILP rule, output {j}"


@pytest.mark.parametrize("name", CASES)
def test_grid_step_holds(name):
    g, op = _graph(name)
    lo, hi, pts = _box_and_points(g)
    pts = np.round(pts * 8) / 8  # inputs on the grid 1/8
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    bounds = interval_bounds(g, lo[None], hi[None], keep_all=True)
    steps = {"x": 0.125}
    for o in g.ops:
        steps[o.output] = o.grid_step([steps.get(n) for n in o.inputs], bounds)
    step = steps[op.output]
    if step is None or not np.isfinite(step):
        return  # no claim made
    y = _values(g, pts, op.output)
    assert np.all(np.abs(y / step - np.round(y / step)) == 0), f"{name}: grid rule"
