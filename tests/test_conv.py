"""Convolutional models: Conv (pads, strides, dilations, groups, auto_pad), AveragePool,
GlobalAveragePool, MaxPool and BatchNormalization read as patch-form linear maps that compute what
onnxruntime computes; CNN twins from quantize_static (QDQ and QOperator, per-tensor and per-channel) keep every
sampled onnxruntime output inside the bounds of every mode; verdicts on snapped CNN twins match
exhaustive enumeration, through branch and bound and through the MILP. QOperator CNNs
(QLinearConv, QLinearAveragePool, MaxPool on codes) evaluate exactly as onnxruntime does."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import models as M
import vnncomp_qeb.portfolio as P
from vnncomp_qeb.analysis.dra import MODES, difference_bounds
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.twin_writer import build_twin
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.ir.fuse import normalise

LAYERS = [  # (node, input (C, H, W), initializers)
    ("conv", dict(pads=[1, 1, 1, 1]), (2, 5, 6), (3, 2, 3, 3)),
    ("conv", dict(strides=[2, 1], dilations=[1, 2]), (2, 7, 7), (4, 2, 2, 3)),
    ("conv", dict(group=2, pads=[0, 1, 2, 0]), (4, 6, 5), (6, 2, 3, 2)),
    ("conv", dict(auto_pad="SAME_UPPER", strides=[2, 2]), (1, 7, 6), (2, 1, 3, 3)),
    ("conv", dict(auto_pad="SAME_LOWER"), (1, 5, 5), (2, 1, 2, 2)),
    ("avg", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]), (2, 6, 6), None),
    ("avg", dict(kernel_shape=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1), (2, 5, 5), None),
    ("gap", {}, (3, 4, 5), None),
    ("max", dict(kernel_shape=[2, 2], strides=[2, 2]), (2, 6, 6), None),
    ("max", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]), (2, 5, 5), None),
    ("max", dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1), (2, 5, 6), None),
    ("conv", dict(pads=[1, 0], strides=[2]), (2, 7), (3, 2, 3)),  # 1-D
    ("max", dict(kernel_shape=[2], strides=[2], ceil_mode=1), (3, 7), None),  # 1-D
    ("bn", dict(epsilon=1e-3), (3, 4, 4), None),
]


def _single(path, kind, attrs, shape, kshape, rng):
    inits = []
    if kind == "conv":
        inits = [nh.from_array(rng.normal(size=kshape).astype(np.float32), "K"),
                 nh.from_array(rng.normal(size=kshape[0]).astype(np.float32), "b")]
        node = h.make_node("Conv", ["x", "K", "b"], ["y"], **attrs)
    elif kind == "avg":
        node = h.make_node("AveragePool", ["x"], ["y"], **attrs)
    elif kind == "gap":
        node = h.make_node("GlobalAveragePool", ["x"], ["y"])
    elif kind == "max":
        node = h.make_node("MaxPool", ["x"], ["y"], **attrs)
    else:
        C = shape[0]
        inits = [nh.from_array(rng.uniform(0.5, 2, C).astype(np.float32), n) for n in ("g", "beta", "mu", "var")]
        node = h.make_node("BatchNormalization", ["x", "g", "beta", "mu", "var"], ["y"], **attrs)
    graph = h.make_graph([node], "one", [h.make_tensor_value_info("x", T.FLOAT, ["N", *shape])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), str(path))
    return str(path)


@pytest.mark.parametrize("kind, attrs, shape, kshape", LAYERS, ids=[f"{c[0]}{i}" for i, c in enumerate(LAYERS)])
def test_layer_computes_what_onnxruntime_computes(tmp_path, kind, attrs, shape, kshape):
    rng = np.random.default_rng(len(shape) + sum(shape))
    path = _single(tmp_path / "m.onnx", kind, attrs, shape, kshape, rng)
    g = load_onnx(path)
    x = rng.normal(size=(20,) + shape).astype(np.float32)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = g.evaluate(x.astype(np.float64))
    np.testing.assert_allclose(got, y.reshape(20, -1), rtol=1e-5, atol=1e-5)
    if kind in ("conv", "avg", "gap"):  # patch form: a sparse map, never a dense matrix
        (op,) = [o for o in g.ops if o.kind == "Affine"]
        assert op.sparse and op.W.nnz <= op.W.shape[1] * op.fan_in


@pytest.fixture(scope="module")
def cnn_twins(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    out = {}
    for bn in (False, True, "maxpool"):
        f = M.cnn(d / f"f{bn}.onnx", batch_norm=bn is True, pool="max" if bn == "maxpool" else "avg")
        for pc in (False, True):
            for fmt in ("QDQ", "QOperator"):
                q = M.quantize(f, d / f"q{bn}{pc}{fmt}.onnx", fmt, pc, shape=(1, 6, 6))
                t = d / f"t{bn}{pc}{fmt}.onnx"
                onnx.save(build_twin(f, q), str(t))
                out[(bn, pc, fmt)] = (f, q, str(t))
    return d, out


TWINS = [(False, False, "QDQ"), (False, True, "QDQ"), (True, False, "QDQ"), (True, True, "QDQ"),
         ("maxpool", True, "QDQ"), (False, True, "QOperator"), ("maxpool", False, "QOperator")]


@pytest.mark.parametrize("bn, pc, fmt", TWINS)
def test_cnn_twin_bounds_hold(cnn_twins, bn, pc, fmt):
    d, twins = cnn_twins
    f, q, twin = twins[(bn, pc, fmt)]
    if fmt == "QOperator":  # QLinearConv, QLinearAveragePool, MaxPool on codes: exactly onnxruntime's
        x = np.random.default_rng(1).uniform(-1, 1, (200, 1, 6, 6)).astype(np.float32)
        y = ort.InferenceSession(q, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(load_onnx(q).evaluate(x.astype(np.float64)), y, rtol=0, atol=1e-6)
    rng = np.random.default_rng(7)
    c = rng.uniform(-0.5, 0.5, 36)
    lo, hi = c - 0.05, c + 0.05
    spec = d / "b.vnnlib"
    spec.write_text(error_bound_v1(lo, hi, 1.0, [0, 1], 2))
    inst = load_instance(str(spec), twin)
    x = rng.uniform(lo, hi, size=(3000, 36))
    x[:600] = np.where(rng.random((600, 36)) < 0.5, lo, hi)
    y = ort.InferenceSession(twin, providers=["CPUExecutionProvider"]).run(
        None, {"X": x.reshape(-1, 1, 6, 6).astype(np.float32)})[0].astype(np.float64)
    graph = normalise(inst.graph)
    for mode in MODES:
        blo, bhi = difference_bounds(graph, lo[None], hi[None], mode)
        assert np.all(y >= blo) and np.all(y <= bhi), (mode, (blo - y).max(), (y - bhi).max())


@pytest.mark.parametrize("bn, pc, fmt", TWINS)
def test_cnn_twins_are_paired_layer_by_layer(cnn_twins, bn, pc, fmt):
    """The differential analysis pairs every CNN twin's layers: a MaxPool (written as picks and
    ``m + relu(s − m)``) is paired as one window maximum, and a BatchNormalization that stays
    apart from Q's quantized convolution moves in front of Q's clamps (its scale into Δ)."""
    from vnncomp_qeb.analysis.dra import cached_difference_graph

    _, twins = cnn_twins
    graph = normalise(load_instance_graph(twins[(bn, pc, fmt)][2]))
    dg = cached_difference_graph(graph)
    assert dg is not None, (bn, pc, fmt)
    kinds = [op.kind for op in dg.graph.ops]
    assert ("DiffMaxPool" in kinds) == (bn == "maxpool")
    # both convolutions, the Gemm, and an AveragePool (a linear layer of its own)
    assert kinds.count("Float32Noise") == 3 + (bn != "maxpool")


def load_instance_graph(path):
    return load_onnx(path)


SCALE = 0.25
FREE = [7, 14, 21]  # the pixels left free; the others are pinned to one grid point each


@pytest.mark.parametrize("net", [(False, "QDQ"), ("maxpool", "QDQ"), ("maxpool", "QOperator")],
                         ids=["avgpool-qdq", "maxpool-qdq", "maxpool-qoperator"])
@pytest.mark.parametrize("through", ["branch-and-bound", "milp"])
def test_snapped_cnn_verdicts_match_enumeration(cnn_twins, through, net, monkeypatch):
    d, twins = cnn_twins
    f, q, _ = twins[(net[0], True, net[1])]
    path = M.snapped_twin(f, q, d / f"snapped_{net[0]}_{net[1]}.onnx", SCALE)
    rng = np.random.default_rng(3)
    k = rng.integers(-3, 4, 36).astype(np.float64)
    k_lo, k_hi = k.copy(), k.copy()
    k_hi[FREE] = k[FREE] + 2
    lower, upper = (k_lo - 0.25) * SCALE, (k_hi + 0.25) * SCALE
    pts = np.tile(k * SCALE, (27, 1))
    pts[:, FREE] = M.grid_points(k[FREE], k[FREE] + 2, SCALE)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"X": pts.reshape(-1, 1, 6, 6).astype(np.float32)})[0]
    top = float(np.abs(y.astype(np.float64)).max())
    if through == "milp":
        monkeypatch.setattr(P, "SPLIT_DIMS", 0)
        monkeypatch.setattr(P, "SPLIT_SHARE", 0.0)
        monkeypatch.setattr(P._Run, "falsify", lambda self: None)
    # the code-space branch and bound decides single points exactly (onnxruntime and the exact
    # arithmetic), so 0.1 % is enough; the MILP's proof keeps every rounding's tie band (a fused
    # int8 kernel may round a near-tie either way) and needs about an output step
    step = max(float(np.max(op.scale)) for op in load_onnx(path).ops if op.kind == "FakeQuant")
    above = top * 1.001 if through == "branch-and-bound" else top + 2 * step
    for eps, truth in ((above, "unsat"), (top * 0.999, "sat")):
        spec = d / f"s_{through}_{net}_{truth}.vnnlib"
        spec.write_text(error_bound_v1(lower, upper, eps, [0, 1], 2))
        inst = load_instance(str(spec), path)
        out = P.verify(inst, timeout=20.0, log=lambda m: None)
        assert out.verdict == truth, (through, eps, top, out)
        if truth == "sat":
            r = replay(inst, np.asarray(out.replay.x, dtype=np.float64))
            assert r.ok and np.abs(r.y).max() >= eps


def _bounds_hold(path, x_box_lo, x_box_hi, samples):
    """Every onnxruntime output on ``samples`` lies inside every mode's bounds over the box."""
    graph = normalise(load_onnx(path))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: samples.astype(np.float32)})[0].reshape(len(samples), -1)
    for mode in MODES:
        blo, bhi = difference_bounds(graph, x_box_lo[None], x_box_hi[None], mode)
        assert np.all(y >= blo) and np.all(y <= bhi), (mode, (blo - y).max(), (y - bhi).max())


@pytest.mark.parametrize("conv", [False, True], ids=["bn", "conv-bn"])
def test_batchnorm_constants_cancelling_stay_inside(tmp_path, conv):
    """onnxruntime derives BatchNormalization's scale and shift in float32: with a large mean the
    shift B − mean·k cancels, and its rounding (not the output's) dominates (found by review)."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        var, scale, mean = np.float32(rng.uniform(0.5, 3)), np.float32(rng.uniform(0.5, 2)), np.float32(1000.0)
        k = float(scale) / np.sqrt(float(var) + float(np.float32(1e-5)))
        inits = [nh.from_array(np.array([v], np.float32), n)
                 for n, v in (("g", scale), ("beta", np.float32(mean * k)), ("mu", mean), ("var", var))]
        nodes, src = [], "x"
        if conv:
            inits.append(nh.from_array(np.full((1, 1, 1, 1), 1e-3, np.float32), "K"))
            nodes.append(h.make_node("Conv", ["x", "K"], ["c"]))
            src = "c"
        nodes.append(h.make_node("BatchNormalization", [src, "g", "beta", "mu", "var"], ["y"]))
        graph = h.make_graph(nodes, "bn", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 2, 2])],
                             [h.make_tensor_value_info("y", T.FLOAT, ["N", 1, 2, 2])], inits)
        path = str(tmp_path / f"bn{trial}.onnx")
        onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), path)
        _bounds_hold(path, np.full(4, -0.01), np.full(4, 0.01), rng.uniform(-0.01, 0.01, (50, 1, 2, 2)))


@pytest.mark.parametrize("kind", ["conv", "gemm"])
def test_shift_folded_into_a_bias_keeps_its_rounding(tmp_path, kind):
    """``Conv/Gemm(bias 1000.3) → Add(−1000.3)``: onnxruntime rounds W·x + b before the shift;
    the fused bias (≈ 0) must not hide that rounding (found by review). Point boxes."""
    rng = np.random.default_rng(0)
    if kind == "conv":
        nodes = [h.make_node("Conv", ["x", "K", "b"], ["c"]), h.make_node("Add", ["c", "m"], ["y"])]
        inits = [nh.from_array((rng.normal(size=(1, 1, 3, 3)) * 1e-3).astype(np.float32), "K"),
                 nh.from_array(np.array([1000.3], np.float32), "b"), nh.from_array(np.array(-1000.3, np.float32), "m")]
        shape, out = (1, 4, 4), (1, 2, 2)
    else:
        nodes = [h.make_node("Gemm", ["x", "W", "b"], ["c"]), h.make_node("Add", ["c", "m"], ["y"])]
        inits = [nh.from_array((rng.normal(size=(16, 4)) * 1e-3).astype(np.float32), "W"),
                 nh.from_array(np.full(4, 1000.3, np.float32), "b"), nh.from_array(np.full(4, -1000.3, np.float32), "m")]
        shape, out = (16,), (4,)
    graph = h.make_graph(nodes, "t", [h.make_tensor_value_info("x", T.FLOAT, ["N", *shape])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", *out])], inits)
    path = str(tmp_path / "t.onnx")
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), path)
    for x in rng.uniform(-1, 1, (20,) + shape).astype(np.float32):
        flat = x.reshape(-1).astype(np.float64)
        _bounds_hold(path, flat, flat, x[None])


def test_concat_of_convolutions_and_batchless_convolutions(tmp_path):
    """A Concat of convolution outputs (held flat) along a spatial axis, and a Conv in a model
    without a batch axis, are refused rather than analysed as another function; along the
    channels the bounds hold (found by review)."""
    from vnncomp_qeb.errors import UnsupportedOperator

    rng = np.random.default_rng(1)
    K = nh.from_array(rng.normal(size=(2, 1, 2, 2)).astype(np.float32), "K")
    for axis, ok in ((1, True), (-3, True), (-1, False), (2, False)):
        nodes = [h.make_node("Conv", ["x", "K"], ["a"]), h.make_node("Relu", ["x"], ["r"]),
                 h.make_node("Conv", ["r", "K"], ["b"]), h.make_node("Concat", ["a", "b"], ["y"], axis=axis)]
        graph = h.make_graph(nodes, "cat", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 3, 3])],
                             [h.make_tensor_value_info("y", T.FLOAT, None)], [K])
        path = str(tmp_path / f"cat{axis}.onnx")
        onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), path)
        if ok:
            x = rng.uniform(-1, 1, (30, 1, 3, 3)).astype(np.float32)
            _bounds_hold(path, np.full(9, -1.0), np.full(9, 1.0), x)
        else:
            with pytest.raises(UnsupportedOperator, match="only channels"):
                load_onnx(path)
    graph = h.make_graph([h.make_node("Conv", ["x", "K"], ["y"])], "bl",
                         [h.make_tensor_value_info("x", T.FLOAT, [3, 1, 3])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                         [nh.from_array(rng.normal(size=(2, 1, 2)).astype(np.float32), "K")])
    path = str(tmp_path / "batchless.onnx")
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), path)
    with pytest.raises(UnsupportedOperator, match="without a batch axis"):
        load_onnx(path)


@pytest.mark.parametrize("kind, attrs, shape, kshape", [c for c in LAYERS if c[0] != "max"],
                         ids=[f"{c[0]}{i}" for i, c in enumerate(LAYERS) if c[0] != "max"])
def test_linear_layer_backsubstitution_and_milp_rows(tmp_path, kind, attrs, shape, kshape):
    """Per op: back-substitution through the layer gives the dense Jacobian (finite differences of
    the evaluator, exact for a linear map), and the proof MILP with its inputs fixed at sampled
    points keeps onnxruntime's outputs inside each output's range."""
    from vnncomp_qeb.analysis.backsub import linear_bounds
    from vnncomp_qeb.analysis.dra import refined_bounds
    from vnncomp_qeb.milp.backends import OPTIMAL, HighsBackend
    from vnncomp_qeb.milp.encode import PROOF, encode

    rng = np.random.default_rng(sum(shape))
    path = _single(tmp_path / "m.onnx", kind, attrs, shape, kshape, rng)
    graph = normalise(load_onnx(path))
    n, m = graph.input_size, graph.output_size
    x0 = rng.normal(size=n)
    base = graph.evaluate(x0[None])[0]
    J = np.stack([graph.evaluate((x0 + np.eye(n)[j])[None])[0] - base for j in range(n)], axis=1)  # (m, n)
    bounds, rel = refined_bounds(graph, (x0 - 1)[None], (x0 + 1)[None])
    coeffs: list = []
    linear_bounds(graph, bounds, rel, graph.outputs[0], np.eye(m), coeffs)
    np.testing.assert_allclose(coeffs[0][0, :m], J, rtol=1e-9, atol=1e-9)  # lower-bound rows: C·J
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for _ in range(3):
        x = rng.uniform(-1, 1, size=n).astype(np.float32)
        y = sess.run(None, {"x": x.reshape((1,) + shape)})[0].reshape(-1).astype(np.float64)
        xd = x.astype(np.float64)
        bounds, _ = refined_bounds(graph, xd[None], xd[None])
        enc = encode(graph, bounds, PROOF)
        for j in rng.choice(m, size=min(m, 3), replace=False):
            for sign in (1.0, -1.0):
                model = enc.model.copy()
                model.add_rows(enc.inputs[:, None], np.ones((n, 1)), xd, xd)
                model.set_objective(enc.outputs[j:j + 1], np.array([sign]))
                r = HighsBackend().solve(model, 10)
                assert r.status == OPTIMAL and sign * y[j] <= r.bound + 1e-6 * (1 + abs(y[j]))
