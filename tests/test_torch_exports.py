"""Models quantized by PyTorch's torch.ao.quantization and exported by torch.onnx (shipped in
specs/networks/mnist_cnn, written by scripts/quantize_mnist_cnn_torch.py): the reference
evaluator computes what onnxruntime computes; PyTorch's pattern (a Relu between a dequantize and
the next quantize) is rewritten exactly into the quantizer's range; the twin with the float
network is analysed layer by layer, its bounds hold on sampled inputs, and verdicts on a snapped
twin match exhaustive enumeration."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import models as M
import vnncomp_qeb.portfolio as P
from vnncomp_qeb.analysis.difference import difference_graph
from vnncomp_qeb.analysis.dra import MODES, difference_bounds
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.twin_writer import build_twin
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.ir.fuse import normalise

NETS = os.path.join(os.path.dirname(__file__), "..", "specs", "networks", "mnist_cnn")


def _run(path, x):
    """onnxruntime one sample at a time (torch.onnx.export fixes the batch at 1)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: xi[None].astype(np.float32)})[0].reshape(1, -1) for xi in x]
                          ).astype(np.float64)


@pytest.mark.parametrize("net", ["cnn_a", "cnn_b"])
def test_torch_export_evaluates_as_onnxruntime(net):
    path = os.path.join(NETS, f"{net}_torch_int8.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (100, 1, 28, 28))
    graph = load_onnx(path)
    y = _run(path, x)
    np.testing.assert_allclose(graph.evaluate(x.reshape(100, -1)), y, rtol=0, atol=1e-5)
    np.testing.assert_allclose(normalise(graph).evaluate(x.reshape(100, -1)), y, rtol=0, atol=1e-5)


def _relu_between(path):
    """x → QDQ → MatMul → Add → QDQ (zero point 7) → Relu → QDQ (another scale) → MatMul → y,
    as torch.ao exports a Linear-ReLU pair."""
    rng = np.random.default_rng(4)
    W1, W2 = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    inits = [nh.from_array(W1, "W1"), nh.from_array(W2, "W2"), nh.from_array(rng.normal(size=5).astype(np.float32), "b1"),
             nh.from_array(np.array(0.02, np.float32), "s0"), nh.from_array(np.array(0, np.uint8), "z0"),
             nh.from_array(np.array(0.05, np.float32), "s1"), nh.from_array(np.array(7, np.uint8), "z1"),
             nh.from_array(np.array(0.03, np.float32), "s2"), nh.from_array(np.array(0, np.uint8), "z2")]
    nodes = [h.make_node("QuantizeLinear", ["x", "s0", "z0"], ["q0"]), h.make_node("DequantizeLinear", ["q0", "s0", "z0"], ["d0"]),
             h.make_node("MatMul", ["d0", "W1"], ["m1"]), h.make_node("Add", ["m1", "b1"], ["a1"]),
             h.make_node("QuantizeLinear", ["a1", "s1", "z1"], ["q1"]), h.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"]),
             h.make_node("Relu", ["d1"], ["r1"]),
             h.make_node("QuantizeLinear", ["r1", "s2", "z2"], ["q2"]), h.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["d2"]),
             h.make_node("MatMul", ["d2", "W2"], ["y"])]
    return M.save(nodes, inits, path, 3, 2)


def test_relu_after_a_quantizer_is_one_quantizer(tmp_path):
    path = _relu_between(tmp_path / "r.onnx")
    graph = load_onnx(path)
    norm = normalise(graph)
    assert not any(op.kind == "Relu" for op in norm.ops)
    assert any(op.kind == "FakeQuant" and op.qmin == 7 for op in norm.ops)
    x = np.random.default_rng(1).uniform(-3, 3, (2000, 3))
    x[:500] = np.round(x[:500] / 0.02) * 0.02  # on the input grid: the hidden values hit ties
    np.testing.assert_array_equal(norm.evaluate(x), graph.evaluate(x))
    np.testing.assert_allclose(graph.evaluate(x), _run(path, x), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def torch_twin(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch")
    f, q = os.path.join(NETS, "cnn_a.onnx"), os.path.join(NETS, "cnn_a_torch_int8.onnx")
    twin = d / "twin.onnx"
    onnx.save(build_twin(f, q), str(twin))
    return d, f, q, str(twin)


def test_twin_is_paired_and_bounds_hold(torch_twin):
    d, f, q, twin = torch_twin
    graph = normalise(load_onnx(twin))
    assert difference_graph(graph) is not None  # every conv/gemm layer of N paired with Q's
    rng = np.random.default_rng(7)
    c = rng.uniform(0.1, 0.9, 784)
    lo, hi = c - 2 / 255, c + 2 / 255
    x = rng.uniform(lo, hi, (400, 784))
    x[:100] = np.where(rng.random((100, 784)) < 0.5, lo, hi)
    y = _run(twin, x.reshape(-1, 1, 28, 28))
    for mode in MODES:
        blo, bhi = difference_bounds(graph, lo[None], hi[None], mode)
        assert np.all(y >= blo) and np.all(y <= bhi), (mode, (blo - y).max(), (y - bhi).max())


SCALE = 1 / 255
FREE = [300, 301, 328]  # pixels left free (three grid values each); the others pinned


def test_snapped_twin_verdicts_match_enumeration(torch_twin):
    d, f, q, _ = torch_twin
    path = M.snapped_twin(f, q, d / "snapped.onnx", SCALE)
    rng = np.random.default_rng(3)
    k = rng.integers(0, 120, 784).astype(np.float64)
    k_hi = k.copy()
    k_hi[FREE] = k[FREE] + 2
    lower, upper = (k - 0.25) * SCALE, (k_hi + 0.25) * SCALE
    pts = np.tile(k * SCALE, (27, 1))
    pts[:, FREE] = M.grid_points(k[FREE], k[FREE] + 2, SCALE)
    y = _run(path, pts.reshape(-1, 1, 28, 28))
    top = float(np.abs(y).max())
    for eps, truth in ((top * 1.001, "unsat"), (top * 0.999, "sat")):
        spec = d / f"s_{truth}.vnnlib"
        spec.write_text(error_bound_v1(lower, upper, eps, list(range(10)), 10))
        inst = load_instance(str(spec), path)
        out = P.verify(inst, timeout=30.0, log=lambda m: None)
        assert out.verdict == truth, (eps, top, out)
        if truth == "sat":
            r = replay(inst, np.asarray(out.replay.x, dtype=np.float64))
            assert r.ok and np.abs(r.y).max() >= eps


def test_two_network_query_reads_the_torch_export(torch_twin, tmp_path):
    """The VNN-LIB 2.0 form (N and the torch export as two files) gives the twin's verdict."""
    from vnncomp_qeb.io.vnnlib_writer import error_bound_v2

    d, f, q, twin = torch_twin
    x0 = np.random.default_rng(5).uniform(0.2, 0.8, 784)
    lo, hi = x0 - 1 / 255, x0 + 1 / 255
    y = _run(twin, np.clip(x0, lo, hi).reshape(1, 1, 28, 28))
    spec = tmp_path / "q.vnnlib"
    spec.write_text(error_bound_v2(lo, hi, float(np.abs(y).max()) * 0.5, list(range(10)), [1, 1, 28, 28], [1, 10]))
    inst = load_instance(str(spec), {"N": f, "Q": q})
    out = P.verify(inst, timeout=20.0, log=lambda m: None)
    assert out.verdict == "sat"
    assert replay(inst, np.asarray(out.replay.x, dtype=np.float64)).ok
