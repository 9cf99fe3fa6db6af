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
