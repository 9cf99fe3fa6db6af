"""onnxruntime quantizes the float weights and bias of a linear layer inside a QDQ group when it
loads the model (WeightBiasQuantization): the reference evaluator computes what onnxruntime
computes in every variant of that pattern — and in the variants onnxruntime leaves alone."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import models as M
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.io.ort_rewrites import quantize_like_onnxruntime

CASES = [  # (layer, what reads its output, input shape, variant)
    ("Gemm", "Q", [3], "bias"), ("Gemm", "Q", [3], "no bias"), ("Gemm", "Q", [3], "alpha beta"),
    ("Gemm", "Q", [3], "dq weight per channel"), ("MatMulAdd", "Q", [3], "bias"),
    ("MatMulAdd", "Q", [3], "bias first"), ("Conv", "Q", [1, 4, 4], "bias"), ("Conv", "Q", [1, 4, 4], "no bias"),
    # left as they are by onnxruntime
    ("Gemm", "Relu", [3], "bias"), ("Gemm", "Q and Relu", [3], "bias"), ("MatMulAdd", "Q", [3], "bias 2-D"),
    ("MatMulAdd", "Q", [2, 3], "bias"), ("MatMulAdd", "Q", [3], "no bias"),
]
REWRITTEN = 8  # the first CASES are rewritten


def _model(path, layer, after, shape, variant, rng):
    inits = [nh.from_array(np.array(0.02, np.float32), "s"), nh.from_array(np.array(0, np.uint8), "z"),
             nh.from_array(np.array(0.05, np.float32), "s1"), nh.from_array(np.array(3, np.uint8), "z1")]
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), h.make_node("DequantizeLinear", ["q", "s", "z"], ["d"])]
    bias = variant != "no bias"
    b = rng.normal(size=(1, 4) if variant == "bias 2-D" else 4).astype(np.float32)
    if layer == "Conv":
        inits += [nh.from_array(rng.normal(size=(4, 1, 2, 2)).astype(np.float32), "W"), nh.from_array(b, "b")]
        nodes.append(h.make_node("Conv", ["d", "W"] + (["b"] if bias else []), ["o"]))
        out_shape = ["N", 4, 3, 3]
    elif layer == "Gemm":
        if variant == "dq weight per channel":
            inits += [nh.from_array(rng.integers(-60, 60, (4, 3)).astype(np.int8), "Wq"),
                      nh.from_array(np.array([0.011, 0.02, 0.033, 0.04], np.float32), "ws"),
                      nh.from_array(np.zeros(4, np.int8), "wz")]
            nodes.append(h.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["W"], axis=0))
        else:
            inits.append(nh.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"))
        inits.append(nh.from_array(b, "b"))
        kw = dict(alpha=0.5, beta=2.0) if variant == "alpha beta" else {}
        nodes.append(h.make_node("Gemm", ["d", "W"] + (["b"] if bias else []), ["o"], transB=1, **kw))
        out_shape = ["N", 4]
    else:
        inits += [nh.from_array(rng.normal(size=(3, 4)).astype(np.float32), "W"), nh.from_array(b, "b")]
        nodes.append(h.make_node("MatMul", ["d", "W"], ["m"]))
        if bias:
            nodes.append(h.make_node("Add", ["b", "m"] if variant == "bias first" else ["m", "b"], ["o"]))
        else:
            nodes.append(h.make_node("Identity", ["m"], ["o"]))
        out_shape = ["N"] + shape[:-1] + [4]
    outputs = ["y"]
    if "Q" in after:
        nodes += [h.make_node("QuantizeLinear", ["o", "s1", "z1"], ["oq"]), h.make_node("DequantizeLinear", ["oq", "s1", "z1"], ["y"])]
    else:
        nodes.append(h.make_node("Relu", ["o"], ["y"]))
    if after == "Q and Relu":
        nodes.append(h.make_node("Relu", ["o"], ["y2"]))
        outputs.append("y2")
    graph = h.make_graph(nodes, "wbq", [h.make_tensor_value_info("x", T.FLOAT, ["N"] + shape)],
                         [h.make_tensor_value_info(o, T.FLOAT, out_shape) for o in outputs], inits)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), str(path))
    return str(path)


@pytest.mark.parametrize("k", range(len(CASES)), ids=[" ".join(c[:2]) + f" {c[3]} {c[2]}" for c in CASES])
def test_evaluator_is_onnxruntime(tmp_path, k):
    layer, after, shape, variant = CASES[k]
    rng = np.random.default_rng(k)
    path = _model(tmp_path / "m.onnx", layer, after, shape, variant, rng)
    model = onnx.load(path)
    assert (quantize_like_onnxruntime(model) is not model) == (k < REWRITTEN)
    if layer == "MatMulAdd" and len(shape) > 1:
        return  # a MatMul over extra axes is not read (not fused by onnxruntime either: asserted above)
    x = rng.uniform(-1, 4, (300,) + tuple(shape)).astype(np.float32)
    x[:100] = np.round(x[:100] / 0.02) * 0.02  # on the input grid
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = np.concatenate([np.concatenate([v.reshape(1, -1) for v in sess.run(None, {"x": xi[None]})], axis=1)
                        for xi in x]).astype(np.float64)
    got = load_onnx(path).evaluate(x.reshape(len(x), -1).astype(np.float64))
    np.testing.assert_allclose(got, y, rtol=0, atol=1e-5)


DOUBLE = [  # ((s1, z1), (s2, z2), zero-point types, variant)
    ((0.05, 3), (0.03, 0), (np.uint8, np.uint8), "plain"), ((0.05, 3), (0.03, 0), (np.int8, np.int8), "plain"),
    ((0.02, 0), (0.05, 10), (np.uint8, np.uint8), "plain"), ((0.05, 3), (0.07, 128), (np.uint8, np.uint8), "plain"),
    ((0.05, 3), (0.05, 3), (np.uint8, np.uint8), "plain"), ((0.05, 3), (0.03, 0), (np.uint8, np.uint8), "three pairs"),
    # left as they are by onnxruntime
    ((0.05, 3), (0.03, 0), (np.uint8, np.int8), "plain"), ((0.05, 3), (0.03, 0), (np.uint8, np.uint8), "middle read"),
    ((0.05, 3), (0.03, 0), (np.uint8, np.uint8), "middle output"),
]


def _double(path, p1, p2, types, variant):
    (s1, z1), (s2, z2) = p1, p2
    inits = [nh.from_array(np.array(s1, np.float32), "s1"), nh.from_array(np.array(z1, types[0]), "z1"),
             nh.from_array(np.array(s2, np.float32), "s2"), nh.from_array(np.array(z2, types[1]), "z2"),
             nh.from_array(np.array(0.04, np.float32), "s3"), nh.from_array(np.array(1, types[1]), "z3")]
    nodes = [h.make_node("QuantizeLinear", ["x", "s1", "z1"], ["q1"]), h.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"]),
             h.make_node("QuantizeLinear", ["d1", "s2", "z2"], ["q2"]), h.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["d2"])]
    last, outputs = "d2", []
    if variant == "three pairs":
        nodes += [h.make_node("QuantizeLinear", ["d2", "s3", "z3"], ["q3"]), h.make_node("DequantizeLinear", ["q3", "s3", "z3"], ["d3"])]
        last = "d3"
    nodes.append(h.make_node("Relu", [last], ["y"]))
    outputs.append("y")
    if variant == "middle read":
        nodes.append(h.make_node("Relu", ["d1"], ["y2"]))
        outputs.append("y2")
    if variant == "middle output":
        outputs.append("d1")
    graph = h.make_graph(nodes, "dqdq", [h.make_tensor_value_info("x", T.FLOAT, ["N", 6])],
                         [h.make_tensor_value_info(o, T.FLOAT, ["N", 6]) for o in outputs], inits)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), str(path))
    return str(path)


@pytest.mark.parametrize("k", range(len(DOUBLE)), ids=[f"{c[0]}{c[1]} {c[2][0].__name__}/{c[2][1].__name__} {c[3]}" for c in DOUBLE])
def test_double_qdq_pairs_as_onnxruntime_merges_them(tmp_path, k):
    p1, p2, types, variant = DOUBLE[k]
    path = _double(tmp_path / "d.onnx", p1, p2, types, variant)
    # off the rounding ties (where a float32 division may round either way: the analyses' tie
    # bands cover those); two roundings and one differ on thousands of these points
    x = np.random.default_rng(k).uniform(-6, 14, (3000, 6)).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = np.concatenate(sess.run(None, {"x": x}), axis=1).astype(np.float64)
    np.testing.assert_allclose(load_onnx(path).evaluate(x.astype(np.float64)), y, rtol=0, atol=1e-6)


def test_scale_computed_from_constants_is_folded_first(tmp_path):
    """A DequantizeLinear whose scale a node computes from constants: onnxruntime folds it, then
    quantizes the layer's weights — so does the loader (this failed before the folding)."""
    rng = np.random.default_rng(9)
    inits = [nh.from_array(np.array(0.01, np.float32), "a"), nh.from_array(np.array(2.0, np.float32), "two"),
             nh.from_array(np.array(0, np.uint8), "z"), nh.from_array(np.array(0.05, np.float32), "s1"),
             nh.from_array(np.array(3, np.uint8), "z1"), nh.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
             nh.from_array(rng.normal(size=4).astype(np.float32), "b")]
    nodes = [h.make_node("Mul", ["a", "two"], ["s"]), h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]), h.make_node("Gemm", ["d", "W", "b"], ["o"], transB=1),
             h.make_node("QuantizeLinear", ["o", "s1", "z1"], ["oq"]), h.make_node("DequantizeLinear", ["oq", "s1", "z1"], ["y"])]
    path = M.save(nodes, inits, tmp_path / "c.onnx", 3, 4)
    x = rng.uniform(0, 2, (200, 3)).astype(np.float32)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(load_onnx(path).evaluate(x.astype(np.float64)), y, rtol=0, atol=1e-5)
