"""The differential analysis is sound in every mode and on every quantization form: no
onnxruntime output on sampled or exhaustively enumerated inputs escapes its bounds."""

import os

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT

import models as M
from vnncomp_qeb.analysis.dra import MODES, difference_bounds
from vnncomp_qeb.analysis.interval import output_bounds
from vnncomp_qeb.io.fixed_point import faithful_twin, load_qebnet
from vnncomp_qeb.io.onnx_loader import load_onnx, model_to_graph
from vnncomp_qeb.io.twin_writer import build_twin
from vnncomp_qeb.ir.fuse import normalise

NETS = os.path.join(ROOT, "specs", "networks", "qebverif")


def _ort(model_or_path, x):
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    shape = sess.get_inputs()[0].shape
    x = x.astype({"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(sess.get_inputs()[0].type,
                                                                                np.float32))
    if isinstance(shape[0], int):  # fixed batch of one
        return np.concatenate([sess.run(None, {name: xi[None]})[0] for xi in x]).astype(np.float64)
    return sess.run(None, {name: x})[0].astype(np.float64)


def _assert_inside(graph, model, lo, hi, x):
    y = _ort(model, x)
    for mode in MODES:
        blo, bhi = difference_bounds(graph, lo[None], hi[None], mode)
        assert np.all(y >= blo) and np.all(y <= bhi), (mode, (blo - y).max(), (y - bhi).max())


def _box_samples(lo, hi, n, rng, integer=False):
    x = rng.uniform(lo, hi, size=(n, lo.size))
    x[: n // 5] = np.where(rng.random((n // 5, lo.size)) < 0.5, lo, hi)
    return np.round(x) if integer else x


@pytest.fixture(scope="module")
def twins(int8_models, tmp_path_factory):
    d = tmp_path_factory.mktemp("dra")
    out = {}
    f = int8_models[("float", True)]
    for key in [("QDQ", False, True), ("QDQ", True, True), ("QOperator", False, False), ("QOperator", True, True)]:
        q = int8_models[key]
        out[f"{key}-snapped"] = M.snapped_twin(f, q, d / f"s_{key}.onnx", 0.125)
        twin = d / f"t_{key}.onnx"
        import onnx

        onnx.save(build_twin(f, q), str(twin))
        out[f"{key}-plain"] = str(twin)
    q16 = M.quantize(f, d / "q16.onnx", activation="QInt16")
    import onnx

    onnx.save(build_twin(f, q16), str(d / "t16.onnx"))
    out["int16"] = str(d / "t16.onnx")
    return out


@pytest.mark.parametrize("name", ["('QDQ', False, True)-snapped", "('QDQ', True, True)-plain",
                                  "('QOperator', False, False)-plain", "('QOperator', True, True)-snapped",
                                  "int16"])
@pytest.mark.parametrize("radius", [0.02, 0.3])
def test_sampled_int8_twins(twins, name, radius):
    path = twins[name]
    graph = normalise(load_onnx(path))
    rng = np.random.default_rng(len(name))
    for _ in range(3):
        c = rng.uniform(-0.5, 0.5, size=4)
        _assert_inside(graph, path, c - radius, c + radius, _box_samples(c - radius, c + radius, 2000, rng))


def test_exhaustive_grid_snapped_twin(twins):
    path = twins["('QDQ', False, True)-snapped"]
    graph = normalise(load_onnx(path))
    k_lo, k_hi = np.array([-3, 0, 1, -2]), np.array([1, 3, 4, 1])
    x = M.grid_points(k_lo, k_hi, 0.125)  # every point the box can reach
    _assert_inside(graph, path, (k_lo - 0.4) * 0.125, (k_hi + 0.4) * 0.125, x)


@pytest.mark.parametrize("name, Q", [("PTQ_mnist_1blk_100_in_8_relu_0", 4), ("PTQ_mnist_3blk_100_100_100_in_8_relu_0", 8),
                                     ("ACASXU_run2a_1_1_batch_2000", 4), ("ACASXU_run2a_3_3_batch_2000", 10)])
def test_fixed_point_twins(name, Q):
    net = load_qebnet(os.path.join(NETS, name + ".npz"))
    model = faithful_twin(net, Q)
    graph = normalise(model_to_graph(model))
    rng = np.random.default_rng(Q)
    lo_all, hi_all, r = ((0, 255, 3) if net.family == "mnist" else (-128, 127, 6))
    c = rng.integers(lo_all, hi_all + 1, size=net.input_size)
    lo, hi = np.clip(c - r, lo_all, hi_all), np.clip(c + r, lo_all, hi_all)
    _assert_inside(graph, model, lo.astype(float), hi.astype(float), _box_samples(lo, hi, 300, rng, integer=True))


def test_float16_weight_twin(tmp_path):
    from vnncomp_qeb.io.mlp_writer import mlp_model

    net = load_qebnet(os.path.join(NETS, "ACASXU_run2a_2_1_batch_2000.npz"))
    half = [w.astype(np.float16).astype(np.float32) for w in net.weights]
    halfb = [b.astype(np.float16).astype(np.float32) for b in net.biases]
    import onnx

    onnx.save(mlp_model(net.weights, net.biases), str(tmp_path / "n.onnx"))
    onnx.save(mlp_model(half, halfb), str(tmp_path / "q.onnx"))
    twin = build_twin(str(tmp_path / "n.onnx"), str(tmp_path / "q.onnx"))
    graph = normalise(model_to_graph(twin))
    rng = np.random.default_rng(0)
    lo = np.array([0.6, -0.005, -0.005, 0.45, -0.5])
    hi = lo + 0.01
    _assert_inside(graph, twin, lo, hi, _box_samples(lo, hi, 300, rng))
    blo, bhi = difference_bounds(graph, lo[None], hi[None], "joint")
    base_lo, base_hi = difference_bounds(graph, lo[None], hi[None], "base")
    # the joint bound cancels the shared part of both branches; intervals cannot
    # (measured: joint 0.116, base in the hundreds)
    assert np.max(bhi - blo) < 0.2 and np.max(bhi - blo) < 1e-3 * np.max(base_hi - base_lo)


def test_batched_equals_one_at_a_time_and_best_is_intersection(twins):
    graph = normalise(load_onnx(twins["('QDQ', True, True)-plain"]))
    rng = np.random.default_rng(7)
    c = rng.uniform(-0.5, 0.5, size=(6, 4))
    lo, hi = c - 0.1, c + 0.1
    results = {m: difference_bounds(graph, lo, hi, m) for m in MODES}
    for i in range(6):
        one = difference_bounds(graph, lo[i:i + 1], hi[i:i + 1], "best")
        np.testing.assert_allclose(one[0][0], results["best"][0][i], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(one[1][0], results["best"][1][i], rtol=1e-9, atol=1e-12)
    for m in ("base", "joint", "diff"):  # sym is a baseline only, not part of best
        assert np.all(results["best"][0] >= results[m][0] - 1e-12)
        assert np.all(results["best"][1] <= results[m][1] + 1e-12)
    np.testing.assert_allclose(results["base"][0], output_bounds(graph, lo, hi)[0])


def test_normalise_preserves_the_function(model_dir):
    path = M.fake_quant_chain_f64(model_dir / "chain_dra.onnx")
    g = load_onnx(path)
    n = normalise(g)
    assert sum(op.kind == "FakeQuant" for op in n.ops) == 2  # input snap and hidden activation
    x = np.random.default_rng(0).uniform(-9, 9, size=(5000, 3))
    np.testing.assert_array_equal(n.evaluate(x), g.evaluate(x))


def test_float16_model_bounds_use_float16_rounding(model_dir):
    """Ops are analysed in the type the model computes in; a float16 model stays inside."""
    path = M.float16_mlp(model_dir / "f16.onnx")
    graph = normalise(load_onnx(path))
    assert {op.precision for op in graph.ops} == {"float16"}
    rng = np.random.default_rng(3)
    for r in (0.01, 0.5):
        c = rng.uniform(-1, 1, size=4)
        lo, hi = c - r, c + r
        x = rng.uniform(lo, hi, size=(3000, 4)).astype(np.float16)
        x = x[np.all((x >= lo) & (x <= hi), axis=1)]
        _assert_inside(graph, path, lo, hi, x.astype(np.float64))


def test_fixed_point_twin_is_analysed_in_float64():
    net = load_qebnet(os.path.join(NETS, "PTQ_mnist_1blk_100_in_8_relu_0.npz"))
    graph = normalise(model_to_graph(faithful_twin(net, 8)))
    affine = [op for op in graph.ops if op.kind == "Affine"]
    assert affine and all(op.precision == "float64" for op in affine)
    assert graph.ops[0].precision == "float32"  # the input snap runs on the float32 input


def test_a_quantized_input_differs_by_half_a_step():
    """Q rounds the input N reads as it is: ``δ = x − fq(x)`` is within half a step wherever the box
    lies inside the quantizer's range (the clamps' ends differ — N has none —, so the range of
    ``clamp(x) − fq_clamp(x)`` comes from its kinks, not from the ends alone), and the output
    difference of equal weights is within ``|W|·s/2`` plus float error; sampled points agree."""
    from vnncomp_qeb.analysis.dra import cached_difference_graph, refined_bounds
    from vnncomp_qeb.analysis.difference import DifferenceAnalysis
    from vnncomp_qeb.ir import ops
    from vnncomp_qeb.ir.graph import Graph

    rng = np.random.default_rng(3)
    W, s = rng.normal(size=(6, 3)), 1 / 255
    g = Graph("x", (6,), [ops.Affine(("x",), "n", W=W), ops.FakeQuant(("x",), "xq", scale=np.float64(s),
                          zero_point=np.float64(0.0), qmin=0.0, qmax=255.0),
                          ops.Affine(("xq",), "q", W=W), ops.Sub(("n", "q"), "y")], ["y"])
    dg = cached_difference_graph(g)
    assert dg is not None
    lo, hi = rng.uniform(0.2, 0.4, (1, 6)), rng.uniform(0.5, 0.8, (1, 6))
    b, rel = refined_bounds(g, lo, hi)
    d_lo, d_hi = DifferenceAnalysis(dg, b, rel).local["δ_in"]
    assert np.all(d_lo >= -s / 2 - 1e-6) and np.all(d_hi <= s / 2 + 1e-6)
    y_lo, y_hi = difference_bounds(g, lo, hi, "diff")
    half = np.abs(W).sum(axis=0) * s / 2
    assert np.all(y_hi <= half * 1.01 + 1e-6) and np.all(y_lo >= -half * 1.01 - 1e-6)  # + float32 error
    x = rng.uniform(lo, hi, size=(2000, 6))
    y = g.evaluate(x)
    assert np.all(y >= y_lo) and np.all(y <= y_hi)
