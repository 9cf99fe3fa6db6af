"""Dynamically quantized models (onnxruntime's ``quantize_dynamic``: DynamicQuantizeLinear,
MatMulInteger, ConvInteger with a runtime scale) and static ConvInteger: the reference evaluator
computes what onnxruntime computes, sample by sample (including inputs on rounding ties); every
sampled onnxruntime output of a twin stays inside every mode's bounds, the proof MILP's rows and
the linear relaxation; verdicts on snapped twins match exhaustive enumeration."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from onnxruntime.quantization import QuantType, quantize_dynamic

import models as M
import vnncomp_qeb.portfolio as P
from vnncomp_qeb.analysis.backsub import Relaxations, linear_bounds
from vnncomp_qeb.analysis.dra import MODES, difference_bounds, refined_bounds
from vnncomp_qeb.errors import UnsupportedOperator
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.twin_writer import build_twin
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.ir.fuse import normalise
from vnncomp_qeb.milp.backends import HighsBackend
from vnncomp_qeb.milp.encode import PROOF, encode


def _per_sample(path, x):
    """onnxruntime one sample at a time: the dynamic scale is taken over the whole batch."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: xi[None].astype(np.float32)})[0] for xi in x]).astype(np.float64)


def _dynamic(float_path, out, per_channel=False, weight=QuantType.QInt8):
    quantize_dynamic(str(float_path), str(out), per_channel=per_channel, weight_type=weight)
    return str(out)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("dyn")
    mlp = M.float_mlp(d / "mlp.onnx", sizes=(3, 8, 8, 2), seed=4, gemm=False)
    gemm = M.float_mlp(d / "gemm.onnx", sizes=(5, 12, 2), seed=5, gemm=True)
    cnn = M.cnn(d / "cnn.onnx", batch_norm=False)
    out = {"mlp": (mlp, _dynamic(mlp, d / "mlp_q.onnx")),
           "mlp-pc-u8": (mlp, _dynamic(mlp, d / "mlp_pc.onnx", True, QuantType.QUInt8)),
           "gemm-pc": (gemm, _dynamic(gemm, d / "gemm_pc.onnx", True)),
           "cnn": (cnn, _dynamic(cnn, d / "cnn_q.onnx")),
           "cnn-pc": (cnn, _dynamic(cnn, d / "cnn_pc.onnx", True))}
    return d, out


def _inputs(path, n, rng):
    shape = load_onnx(path).input_shape
    x = rng.uniform(-1, 1, (n,) + tuple(shape))
    # a coarse grid and all-zero / one-signed samples: rounding ties, s = 1 and z at either end
    x[: n // 4] = np.round(x[: n // 4] * 8) / 8
    x[n // 4] = 0.0
    x[n // 4 + 1] = np.abs(x[n // 4 + 1])
    x[n // 4 + 2] = -np.abs(x[n // 4 + 2])
    return x


@pytest.mark.parametrize("net", ["mlp", "mlp-pc-u8", "gemm-pc", "cnn", "cnn-pc"])
def test_evaluator_is_onnxruntime(nets, net):
    _, q = nets[1][net]
    x = _inputs(q, 400, np.random.default_rng(0))
    graph = load_onnx(q)
    assert any(op.kind == "DynamicQuant" for op in graph.ops)
    y = graph.evaluate(x.reshape(len(x), -1))
    ref = _per_sample(q, x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def _box(path, rng, radius):
    shape = load_onnx(path).input_shape
    c = rng.uniform(-0.6, 0.6, int(np.prod(shape)))
    return c - radius, c + radius, shape


@pytest.mark.parametrize("net", ["mlp", "gemm-pc", "cnn", "cnn-pc"])
@pytest.mark.parametrize("radius", [0.02, 0.3])
def test_twin_bounds_hold(nets, net, radius):
    d, pairs = nets
    f, q = pairs[net]
    twin = d / f"twin_{net}.onnx"
    onnx.save(build_twin(f, q), str(twin))
    rng = np.random.default_rng(11)
    lo, hi, shape = _box(f, rng, radius)
    x = rng.uniform(lo, hi, (600, lo.size))
    x[:150] = np.where(rng.random((150, lo.size)) < 0.5, lo, hi)
    y = _per_sample(twin, x.reshape((-1,) + tuple(shape)))
    graph = normalise(load_onnx(str(twin)))
    for mode in MODES:
        blo, bhi = difference_bounds(graph, lo[None], hi[None], mode)
        assert np.all(y >= blo - 1e-12) and np.all(y <= bhi + 1e-12), (mode, (blo - y).max(), (y - bhi).max())
    # the linear relaxation (back-substitution to the input) and the proof MILP's rows hold too
    bounds, rel = refined_bounds(graph, lo[None], hi[None])
    C = np.vstack([np.eye(y.shape[1]), -np.eye(y.shape[1])])
    coeffs: list = []
    lb, _ = linear_bounds(graph, bounds, rel, graph.outputs[0], C, coeffs)
    A = coeffs[0][0][:C.shape[0]]  # lower bound of C·y at x: A·x + const
    lin = x @ A.T
    const = lb[0] - np.minimum(A * lo, A * hi).sum(axis=1)
    assert np.all(y @ C.T >= lin + const - 1e-9)
    _milp_contains(encode(graph, bounds, PROOF), y)


def _milp_contains(enc, ys):
    """The proof MILP's bounds on the maximum and minimum of every output hold the samples."""
    for j in range(ys.shape[1]):
        for sign in (1.0, -1.0):
            model = enc.model.copy()
            model.set_objective(enc.outputs[j:j + 1], np.array([sign]))
            res = HighsBackend().solve(model, 3)  # its dual bound holds at any status
            assert np.isfinite(res.bound) and np.all(sign * ys[:, j] <= res.bound + 1e-9 * (1 + np.abs(ys[:, j])))


SNAP = 0.125


@pytest.mark.parametrize("through", ["branch-and-bound", "milp"])
def test_snapped_twin_verdicts_match_enumeration(nets, through, monkeypatch):
    d, pairs = nets
    f, q = pairs["mlp"]
    path = M.snapped_twin(f, q, d / "snapped_mlp.onnx", SNAP)
    k = np.array([-3.0, 2.0, 1.0])
    k_hi = k + np.array([4, 5, 3])
    lower, upper = (k - 0.25) * SNAP, (k_hi + 0.25) * SNAP
    pts = M.grid_points(k, k_hi, SNAP)  # 5·6·4 = 120 points: every input the box holds
    y = _per_sample(path, pts)
    top = float(np.abs(y).max())
    if through == "milp":
        monkeypatch.setattr(P, "SPLIT_DIMS", 0)
        monkeypatch.setattr(P, "SPLIT_SHARE", 0.0)
        monkeypatch.setattr(P._Run, "falsify", lambda self: None)
    # the MILP keeps the runtime rounding as a band of half a step: its witness model is not
    # exact, so through it alone a violation below the maximum is sat or undecided, never unsat
    for eps, truth in ((top * 1.001, "unsat"), (top * 0.999, "sat")):
        if through == "milp" and truth == "unsat":
            continue
        spec = d / f"s_{through}_{truth}.vnnlib"
        spec.write_text(error_bound_v1(lower, upper, eps, [0, 1], 2))
        inst = load_instance(str(spec), path)
        out = P.verify(inst, timeout=30.0 if through == "branch-and-bound" else 8.0, log=lambda m: None)
        if through == "milp":
            assert out.verdict in ("sat", "timeout", "unknown"), out
        else:
            assert out.verdict == truth, (through, eps, top, out)
        if out.verdict == "sat":
            r = replay(inst, np.asarray(out.replay.x, dtype=np.float64))
            assert r.ok and np.abs(r.y).max() >= eps
    if through == "milp":  # above the relaxation's bound the MILP proves it
        spec = d / "s_milp_loose.vnnlib"
        graph = normalise(load_onnx(path))
        _, bhi = difference_bounds(graph, lower[None], upper[None], "best")
        blo, _ = difference_bounds(graph, lower[None], upper[None], "best")
        spec.write_text(error_bound_v1(lower, upper, float(max(bhi.max(), -blo.min())) * 1.01, [0, 1], 2))
        assert P.verify(load_instance(str(spec), path), timeout=30.0, log=lambda m: None).verdict == "unsat"


def test_conv_integer_of_a_static_quantizer(tmp_path):
    """QuantizeLinear → ConvInteger (input zero point other than the quantizer's, a
    weight zero point, padding) → Cast → Mul: onnxruntime's values, and bounds that hold."""
    rng = np.random.default_rng(2)
    W = rng.integers(-20, 20, (3, 2, 3, 3)).astype(np.int8)
    inits = [nh.from_array(np.array(0.05, np.float32), "s"), nh.from_array(np.array(3, np.uint8), "z"),
             nh.from_array(np.array(5, np.uint8), "xz"), nh.from_array(W, "W"),
             nh.from_array(np.array(2, np.int8), "wz"), nh.from_array(np.array(0.01, np.float32), "c")]
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             h.make_node("ConvInteger", ["q", "W", "xz", "wz"], ["acc"], pads=[1, 1, 1, 1]),
             h.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT), h.make_node("Mul", ["accf", "c"], ["y"])]
    graph = h.make_graph(nodes, "ci", [h.make_tensor_value_info("x", T.FLOAT, ["N", 2, 5, 5])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 3, 5, 5])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION)
    path = tmp_path / "ci.onnx"
    onnx.save(model, str(path))
    x = rng.uniform(0, 1, (50, 2, 5, 5))
    g = load_onnx(str(path))
    y = _per_sample(path, x).reshape(len(x), -1)
    np.testing.assert_allclose(g.evaluate(x.reshape(len(x), -1)), y, rtol=1e-6, atol=1e-6)
    lo, hi = np.full(50, 0.2), np.full(50, 0.6)
    xs = rng.uniform(0.2, 0.6, (300, 50))
    ys = _per_sample(path, xs.reshape(-1, 2, 5, 5)).reshape(300, -1)
    blo, bhi = difference_bounds(normalise(g), lo[None], hi[None], "best")
    assert np.all(ys >= blo) and np.all(ys <= bhi)


def test_other_uses_of_a_runtime_scale_are_refused(tmp_path):
    nodes = [h.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             h.make_node("Add", ["s", "one"], ["y"], name="odd")]
    graph = h.make_graph(nodes, "bad", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                         [h.make_tensor_value_info("y", T.FLOAT, [])], [nh.from_array(np.array(1, np.float32), "one")])
    path = tmp_path / "bad.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), str(path))
    with pytest.raises(UnsupportedOperator, match="'odd'.*runtime quantization scale"):
        load_onnx(str(path))


def test_op_rules_hold_at_sampled_points():
    """DynamicQuant alone, on boxes of every kind (both signs, one-signed, narrow enough to pin
    codes, all-zero possible): onnxruntime's arithmetic (``forward``) stays inside ``interval``,
    above back-substitution's lower bound, and inside the proof MILP's bounds on ``r − x``."""
    from vnncomp_qeb.analysis.interval import interval_bounds
    from vnncomp_qeb.ir.dynamic_quant import DynamicQuant
    from vnncomp_qeb.ir.graph import Graph

    rng = np.random.default_rng(3)
    op = DynamicQuant(("x",), "r")
    graph = Graph("x", (6,), [op], ["r"])
    for centre, radius in [(0.0, 1.0), (2.0, 0.5), (-1.5, 0.3), (0.7, 1e-3), (0.0, 0.0), (5.0, 1e-5)]:
        lo = centre + rng.uniform(-1, 1, 6) - radius
        hi = lo + 2 * radius
        if radius == 0.0:
            lo = hi = np.zeros(6)
        x = rng.uniform(lo, hi, (500, 6))
        x[:100] = np.where(rng.random((100, 6)) < 0.5, lo, hi)
        x = x.astype(np.float32).astype(np.float64)
        x = np.clip(x, lo, hi)
        r = op.forward(x)
        olo, ohi = op.interval((lo[None], hi[None]))
        assert np.all(r >= olo) and np.all(r <= ohi)
        bounds = {"x": (lo[None], hi[None]), "r": (olo, ohi)}
        L = rng.normal(size=(1, 4, 6))
        const = np.zeros((1, 4))
        (name, Lx), = op.back_substitute(L, bounds, const)
        assert name == "x" and np.all(r @ L[0].T >= x @ Lx[0].T + const[0] - 1e-12)
        enc = encode(graph, interval_bounds(graph, lo[None], hi[None], keep_all=True), PROOF)
        for j in range(6):
            for sign in (1.0, -1.0):
                model = enc.model.copy()
                model.set_objective(np.array([enc.columns["r"][j], enc.columns["x"][j]]), sign * np.array([1.0, -1.0]))
                res = HighsBackend().solve(model, 5)
                assert np.all(sign * (r[:, j] - x[:, j]) <= res.bound + 1e-12)
