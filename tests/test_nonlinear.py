"""Nonlinear operators with their own rules (Sigmoid, Tanh, Exp, Log, Sqrt, Reciprocal, Softplus,
Pow, comparisons, Where, Softmax, products of computed tensors): onnxruntime's kernels stay inside
the float-error allowance; inside a network every sampled onnxruntime output lies within the bounds
of every analysis mode and of the proof MILP; gradients match finite differences; verdicts match
exhaustive enumeration on snapped inputs."""

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import models as M
from vnncomp_qeb.analysis.dra import MODES, difference_bounds, refined_bounds
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.ir import nonlinear as nl
from vnncomp_qeb.ir.fuse import normalise
from vnncomp_qeb.portfolio import verify

SMOOTH = ["Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Softplus", ("Pow", 2.0), ("Pow", 3.0),
          ("Pow", -0.5), ("Pow", 0.5), ("Pow", -1.0), ("Pow", -2.0), ("Pow", 4.0), ("Pow", 1.5)]


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _unary(op, p=None, shape=(None,)):
    nodes = [h.make_node(op, ["x", "e"] if p is not None else ["x"], ["y"])]
    inits = [nh.from_array(np.float32(p), "e")] if p is not None else []
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, list(shape))],
                     [h.make_tensor_value_info("y", T.FLOAT, list(shape))], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=M.IR_VERSION)


@pytest.mark.parametrize("spec", SMOOTH, ids=[s if isinstance(s, str) else f"{s[0]}{s[1]:g}" for s in SMOOTH])
def test_kernel_error_within_the_allowance(spec):
    """|onnxruntime − f| ≤ REL·|f| + ABS on 3·10^5 points (the module's float-error model), and the
    interval of a single point contains what onnxruntime returns (±inf where it overflows)."""
    op, p = (spec, None) if isinstance(spec, str) else spec
    x = np.concatenate([np.linspace(-30, 30, 200001), np.geomspace(1e-30, 1e4, 100000)]).astype(np.float32)
    if op in ("Log", "Sqrt") or (p is not None and not float(p).is_integer()):
        x = np.abs(x) + np.float32(1e-30)
    if op == "Reciprocal" or (p is not None and p < 0):
        x = x[x != 0]
    y = _session(_unary(op, p)).run(None, {"x": x})[0].astype(np.float64)
    s = nl.Smooth(("x",), "y", fn=op, exponent=p if p is not None else 1.0)
    lo, hi = s.interval((x.astype(np.float64)[None], x.astype(np.float64)[None]))
    assert np.all((y >= lo[0]) & (y <= hi[0])), op


NETS = ["Sigmoid", "Tanh", "Exp", "Softplus", ("Pow", 2.0), ("Pow", 3.0), "Softmax", "Mul2", "Div2", "Where", "Greater",
        "Compares", "Log", "Sqrt", "Reciprocal", "Pow2^x",
        "Max2", "Min3", "LeakyRelu", "PRelu", "HardSigmoid"]


def _network(path, kind, rng):
    """x (4) → Gemm (4) → kind → Gemm (3): the op inside a network."""
    W1 = rng.normal(size=(4, 4)).astype(np.float32)
    W2 = rng.normal(size=(4, 3)).astype(np.float32)
    nodes = [h.make_node("Gemm", ["x", "W1"], ["h"])]
    inits = [nh.from_array(W1, "W1"), nh.from_array(W2, "W2")]
    if isinstance(kind, tuple):
        nodes.append(h.make_node("Pow", ["h", "e"], ["a"]))
        inits.append(nh.from_array(np.float32(kind[1]), "e"))
    elif kind == "Softmax":
        nodes.append(h.make_node("Softmax", ["h"], ["a"], axis=-1))
    elif kind in ("Mul2", "Div2"):  # h[:2] · h[2:] (division by a positive part)
        inits += [nh.from_array(np.array([0], np.int64), "s0"), nh.from_array(np.array([2], np.int64), "s2"),
                  nh.from_array(np.array([4], np.int64), "s4"), nh.from_array(np.array([1], np.int64), "ax"),
                  nh.from_array(np.float32(3.0), "three")]
        nodes += [h.make_node("Slice", ["h", "s0", "s2", "ax"], ["u"]), h.make_node("Slice", ["h", "s2", "s4", "ax"], ["v0"])]
        if kind == "Div2":
            nodes += [h.make_node("Abs", ["v0"], ["v1"]), h.make_node("Add", ["v1", "three"], ["v"])]
        else:
            nodes.append(h.make_node("Identity", ["v0"], ["v"]))
        nodes += [h.make_node("Mul" if kind == "Mul2" else "Div", ["u", "v"], ["w"]), h.make_node("Concat", ["w", "u"], ["a"], axis=1)]
    elif kind == "Where":
        inits += [nh.from_array(np.float32(0.3), "t"), nh.from_array(np.float32(-2.0), "f")]
        nodes += [h.make_node("Greater", ["h", "t"], ["c"]), h.make_node("Where", ["c", "h", "f"], ["a"])]
    elif kind in ("Max2", "Min3"):  # of computed tensors (and a tensor constant)
        inits.append(nh.from_array(np.array([[0.2, -0.1, 0.0, 0.3]], np.float32), "c"))
        nodes += [h.make_node("Neg", ["h"], ["g"]),
                  h.make_node(kind[:3], ["h", "g"] + (["c"] if kind == "Min3" else []), ["a"])]
    elif kind in ("LeakyRelu", "HardSigmoid"):
        nodes.append(h.make_node(kind, ["h"], ["a"], alpha=0.1))
    elif kind == "PRelu":
        inits.append(nh.from_array(np.array([0.1, 0.2, -0.3, 0.5], np.float32), "slope"))
        nodes.append(h.make_node("PRelu", ["h", "slope"], ["a"]))
    elif kind == "Compares":  # Less, GreaterOrEqual, LessOrEqual, Equal and Not, summed as 0/1
        inits += [nh.from_array(np.float32(0.1), "t"), nh.from_array(np.zeros((1, 4), np.float32), "z")]
        nodes += [h.make_node("Less", ["h", "t"], ["c1"]), h.make_node("GreaterOrEqual", ["t", "h"], ["c2"]),
                  h.make_node("LessOrEqual", ["h", "z"], ["c3"]), h.make_node("Equal", ["h", "z"], ["c4"]),
                  h.make_node("Not", ["c1"], ["c5"])]
        nodes += [h.make_node("Cast", [f"c{k}"], [f"f{k}"], to=T.FLOAT) for k in range(1, 6)]
        nodes += [h.make_node("Sum", [f"f{k}" for k in range(1, 6)], ["a"])]
    elif kind in ("Log", "Sqrt", "Reciprocal"):  # of a positive tensor
        inits.append(nh.from_array(np.float32(0.5), "half"))
        nodes += [h.make_node("Mul", ["h", "h"], ["sq"]), h.make_node("Add", ["sq", "half"], ["pos"]),
                  h.make_node(kind, ["pos"], ["a"])]
    elif kind == "Pow2^x":
        inits.append(nh.from_array(np.float32(2.0), "two"))
        nodes.append(h.make_node("Pow", ["two", "h"], ["a"]))
    elif kind == "Greater":
        inits.append(nh.from_array(np.float32(0.1), "t"))
        nodes += [h.make_node("Greater", ["h", "t"], ["c"]), h.make_node("Cast", ["c"], ["a"], to=T.FLOAT)]
    else:
        nodes.append(h.make_node(kind, ["h"], ["a"]))
    nodes.append(h.make_node("Gemm", ["a", "W2"], ["y"]))
    g = h.make_graph(nodes, "net", [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 3])], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=M.IR_VERSION), str(path))
    return str(path)


@pytest.mark.parametrize("kind", NETS, ids=[k if isinstance(k, str) else f"Pow{k[1]:g}" for k in NETS])
def test_bounds_milp_and_gradient_in_a_network(tmp_path, kind):
    from vnncomp_qeb.milp.backends import OPTIMAL, HighsBackend
    from vnncomp_qeb.milp.encode import PROOF, encode
    from vnncomp_qeb.search.attack import _backward

    rng = np.random.default_rng(7)
    path = _network(tmp_path / "n.onnx", kind, rng)
    graph = normalise(load_onnx(path))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for _ in range(3):
        c = rng.uniform(-1, 1, 4)
        r = rng.uniform(0.01, 0.5)
        xs = rng.uniform(c - r, c + r, size=(200, 4)).astype(np.float32)
        y = np.concatenate([sess.run(None, {"x": x[None]})[0] for x in xs]).astype(np.float64)
        np.testing.assert_allclose(graph.evaluate(xs.astype(np.float64)), y, rtol=1e-4, atol=1e-4)
        for mode in MODES:
            lo, hi = difference_bounds(graph, (c - r)[None], (c + r)[None], mode)
            assert np.all(y >= lo) and np.all(y <= hi), (kind, mode)
    # the proof MILP at a fixed input contains onnxruntime's output
    x = rng.uniform(-1, 1, 4).astype(np.float32)
    yx = sess.run(None, {"x": x[None]})[0].reshape(-1).astype(np.float64)
    bounds, _ = refined_bounds(graph, x.astype(np.float64)[None], x.astype(np.float64)[None])
    enc = encode(graph, bounds, PROOF)
    for j in range(3):
        for sign in (1.0, -1.0):
            model = enc.model.copy()
            model.set_objective(enc.outputs[j:j + 1], np.array([sign]))
            res = HighsBackend().solve(model, 10)
            assert res.status == OPTIMAL and sign * yx[j] <= res.bound + 1e-6 * (1 + abs(yx[j]))
    # the op's gradient is the finite difference of its forward
    for op in graph.ops:
        if isinstance(op, nl.OWN_RULES) and not isinstance(op, (nl.Compare, nl.Select)):
            xs_in = [rng.uniform(0.5, 1.5, size=(2,) + tuple(graph.shapes[n])) for n in op.inputs]
            g = rng.normal(size=(2,) + tuple(graph.shapes[op.output]))
            grads = op.backward(g, xs_in)
            for k, xk in enumerate(xs_in):
                e = np.zeros_like(xk)
                e.flat[0] = 1e-6
                plus = [v + e if i == k else v for i, v in enumerate(xs_in)]
                minus = [v - e if i == k else v for i, v in enumerate(xs_in)]
                fd = ((op.forward(*plus) - op.forward(*minus)) * g).sum() / 2e-6
                assert abs(fd - grads[k].flat[0]) <= 1e-4 * (1 + abs(fd)), (op.kind, k)
    assert _backward  # the attacks read these rules through their generic dispatch


def test_verdicts_match_enumeration_through_where_and_products(tmp_path):
    """y = Where(q0 > 0.4, q0·q1, Sigmoid(q1)) on snapped inputs q = QDQ(x) (grid step 0.25):
    verdicts at thresholds on both sides of the enumerated maximum."""
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q8"]), h.make_node("DequantizeLinear", ["q8", "s", "z"], ["q"]),
             h.make_node("Split", ["q", "parts"], ["q0", "q1"], axis=1), h.make_node("Greater", ["q0", "t"], ["c"]),
             h.make_node("Mul", ["q0", "q1"], ["p"]), h.make_node("Sigmoid", ["q1"], ["sg"]),
             h.make_node("Where", ["c", "p", "sg"], ["y"])]
    inits = [nh.from_array(np.float32(0.25), "s"), nh.from_array(np.int8(0), "z"), nh.from_array(np.array([1, 1], np.int64), "parts"),
             nh.from_array(np.float32(0.4), "t")]
    g = h.make_graph(nodes, "w", [h.make_tensor_value_info("x", T.FLOAT, [1, 2])], [h.make_tensor_value_info("y", T.FLOAT, [1, 1])], inits)
    path = tmp_path / "w.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)], ir_version=M.IR_VERSION), str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    grid = np.arange(-4, 5) * 0.25
    values = [float(sess.run(None, {"x": np.array([[a, b]], np.float32)})[0][0, 0]) for a, b in itertools.product(grid, grid)]
    for sense, best in ((">=", max(values)), ("<=", min(values))):
        for t in (best - 0.01, best + 0.01):
            spec = tmp_path / "p.vnnlib"
            spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                            "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n(assert (<= X_1 1))\n"
                            f"(assert ({sense} Y_0 {t}))\n")
            reachable = (t < best) if sense == ">=" else (t > best)
            out = verify(load_instance(str(spec), str(path)), 60, log=lambda _: None)
            assert out.verdict == ("sat" if reachable else "unsat"), (sense, t, best, out.verdict)


@pytest.mark.parametrize("spec", SMOOTH, ids=[s if isinstance(s, str) else f"{s[0]}{s[1]:g}" for s in SMOOTH])
def test_relaxations_hold_against_sampling(spec):
    """On random intervals of every scale (down to widths of 1e-9 next to 0, on both sides of 0),
    ``aL·x + bL ≤ f(x) ≤ aU·x + bU`` at sampled points of the interval (f in float64 exactly)."""
    op, p = (spec, None) if isinstance(spec, str) else spec
    s = nl.Smooth(("x",), "y", fn=op, exponent=p if p is not None else 1.0)
    rng = np.random.default_rng(11)
    centre = np.concatenate([rng.uniform(-5, 5, 300), 10.0 ** rng.uniform(-9, 1, 300), -(10.0 ** rng.uniform(-9, 1, 300))])
    width = centre * 0 + 10.0 ** rng.uniform(-9, 0.5, centre.size)
    lo, hi = centre - width * rng.uniform(0, 1, centre.size), centre + width * rng.uniform(0, 1, centre.size)
    # and intervals on one side of 0 that are small relative to their distance from it
    c = np.concatenate([10.0 ** rng.uniform(-9, 1, 300), -(10.0 ** rng.uniform(-9, 1, 300))])
    f = rng.uniform(0.01, 0.9, c.size)
    lo, hi = np.concatenate([lo, np.minimum(c * (1 - f), c * (1 + f))]), np.concatenate([hi, np.maximum(c * (1 - f), c * (1 + f))])
    olo, ohi = s.interval((lo[None], hi[None]))
    aL, bL, aU, bU = s.relaxation(lo[None], hi[None], olo, ohi)
    for t in np.linspace(0, 1, 9):
        x = lo + t * (hi - lo)
        with np.errstate(all="ignore"):
            y = s.f(x)
        ok = np.isfinite(y)
        assert np.all((aL[0] * x + bL[0] <= y + 1e-9 * (1 + np.abs(y)))[ok]), (op, p)
        assert np.all((aU[0] * x + bU[0] >= y - 1e-9 * (1 + np.abs(y)))[ok]), (op, p)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Exp"])
def test_float16_results_inside_the_interval(op):
    """A float16 model (onnxruntime computes in float32, then rounds to float16): every result lies
    in the interval of its input point at precision float16."""
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(_unary(op), keep_io_types=False)
    x = np.linspace(-8, 8, 20001).astype(np.float16)
    y = _session(model).run(None, {"x": x})[0].astype(np.float64)
    s = nl.Smooth(("x",), "y", fn=op, precision="float16")
    lo, hi = s.interval((x.astype(np.float64)[None], x.astype(np.float64)[None]))
    assert np.all((y >= lo[0]) & (y <= hi[0]))


def test_product_underflow_and_overflow_inside_the_interval():
    """float32 products that underflow to 0 or overflow to inf stay inside the interval."""
    g = h.make_graph([h.make_node("Mul", ["a", "b"], ["y"])], "m",
                     [h.make_tensor_value_info("a", T.FLOAT, [None]), h.make_tensor_value_info("b", T.FLOAT, [None])],
                     [h.make_tensor_value_info("y", T.FLOAT, [None])])
    sess = _session(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=M.IR_VERSION))
    a = np.array([1e-23, 1e20, -3e19, 2.5e-30, 7.0], np.float32)
    b = np.array([1e-23, 1e20, 4e19, 3e-20, 1e-3], np.float32)
    y = sess.run(None, {"a": a, "b": b})[0].astype(np.float64)
    p = nl.Product(("a", "b"), "y", precision="float32")
    lo, hi = p.interval([(a.astype(np.float64)[None],) * 2, (b.astype(np.float64)[None],) * 2])
    assert np.all((y >= lo[0]) & (y <= hi[0])), (y, lo, hi)


def test_constant_operands_do_not_make_a_sum_exact(tmp_path):
    """x snapped on a 1/4 grid plus an off-grid constant (built from the input as 0·x + c) is not
    computed exactly: the rounding after it keeps its float-error band."""
    from vnncomp_qeb.analysis.exact import annotate_exact
    from vnncomp_qeb.ir import ops

    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), h.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             h.make_node("Sum", ["d", "c"], ["t"]), h.make_node("Round", ["t"], ["y"])]
    inits = [nh.from_array(np.float32(0.25), "s"), nh.from_array(np.int8(0), "z"), nh.from_array(np.full((1, 2), 0.1, np.float32), "c")]
    path = M.save(nodes, inits, tmp_path / "c.onnx", 2, 2)
    graph = annotate_exact(normalise(load_onnx(path)), None, -np.ones(2), np.ones(2))
    (rnd,) = [op for op in graph.ops if isinstance(op, ops.Round)]
    assert rnd.exact_step is None
