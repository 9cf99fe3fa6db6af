"""ONNX → IR: real files load, what cannot be modelled is refused with node and operator named."""

import gzip
import os
import shutil

import numpy as np
import onnx
import pytest
from conftest import ACASXU

import models as M
from vnncomp_qeb.errors import ModelError, UnsupportedOperator
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.ir import ops


def test_acasxu_opset8_with_initializer_inputs():
    g = load_onnx(os.path.join(ACASXU, "ACASXU_run2a_1_1_batch_2000.onnx"))
    assert g.input_shape == (1, 1, 5)
    assert g.output_size == 5
    affine = [op for op in g.ops if isinstance(op, ops.Affine)]
    assert [a.W.shape for a in affine] == [(5, 50)] + [(50, 50)] * 5 + [(50, 5)]
    assert all(a.b is not None for a in affine)  # MatMul + Add fused into one affine layer
    assert sum(isinstance(op, ops.Relu) for op in g.ops) == 6


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("gemm", [True, False])
def test_quantize_static_forms_normalise_to_fake_quant(int8_models, fmt, per_channel, gemm):
    g = load_onnx(int8_models[(fmt, per_channel, gemm)])
    fq = [op for op in g.ops if isinstance(op, ops.FakeQuant)]
    assert fq, "every quantization form becomes FakeQuant"
    assert all(op.qmin == -128 and op.qmax == 127 and op.mode == "half_even" for op in fq)
    assert sum(isinstance(op, ops.Affine) for op in g.ops) == 3


def test_matmul_integer_and_cast(model_dir):
    g = load_onnx(M.matmul_integer_model(model_dir / "mi.onnx"))
    kinds = [op.kind for op in g.ops]
    assert kinds[0] == "FakeQuant" and "Affine" in kinds and kinds[-1] == "Relu"
    assert g.ops[0].qmin == 0 and g.ops[0].qmax == 255  # uint8 input code


def test_gz_model_loads_like_plain(model_dir):
    path = M.float_mlp(model_dir / "plain.onnx")
    with open(path, "rb") as f, gzip.open(str(model_dir / "plain.onnx.gz"), "wb") as g:
        shutil.copyfileobj(f, g)
    x = np.random.default_rng(0).normal(size=(7, 4))
    np.testing.assert_array_equal(load_onnx(path).evaluate(x), load_onnx(str(model_dir / "plain.onnx.gz")).evaluate(x))


def test_unsupported_operator_names_node_and_operator(model_dir):
    with pytest.raises(UnsupportedOperator, match=r"'squash' \(Erf\)"):
        load_onnx(M.unsupported_model(model_dir / "u.onnx"))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        load_onnx(str(tmp_path / "nope.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(os.urandom(200))
    with pytest.raises(ModelError, match="bad.onnx"):
        load_onnx(str(bad))


def test_variable_times_itself_is_a_square_and_pow_of_two_variables_refused(tmp_path):
    from onnx import helper as h

    nodes = [h.make_node("Mul", ["x", "x"], ["y"], name="square")]
    graph = load_onnx(M.save(nodes, [], tmp_path / "sq.onnx", 3, 3))
    assert [op.describe() for op in graph.ops] == ["Pow 2"]
    x = np.array([[-2.0, 0.5, 3.0]])
    np.testing.assert_array_equal(graph.evaluate(x), x * x)
    nodes = [h.make_node("Pow", ["x", "x"], ["y"], name="tower")]
    with pytest.raises(UnsupportedOperator, match=r"'tower' \(Pow\).*two computed"):
        load_onnx(M.save(nodes, [], tmp_path / "pw.onnx", 3, 3))


def test_integer_input_refused(tmp_path):
    from onnx import TensorProto as T
    from onnx import helper as h

    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.INT8, [1, 3])], [h.make_tensor_value_info("y", T.INT8, [1, 3])])
    path = tmp_path / "int.onnx"
    onnx.save(h.make_model(graph, ir_version=8, opset_imports=[h.make_opsetid("", 13)]), str(path))
    with pytest.raises(ModelError, match="only float inputs"):
        load_onnx(str(path))


def test_max_min_clamp_is_one_clip(tmp_path):
    """``Min(Max(x, 0), 6)`` as exporters write a clip: read, evaluated as onnxruntime does, one
    Clip after normalisation, and its interval bounds hold every sampled output."""
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from vnncomp_qeb.analysis.interval import output_bounds
    from vnncomp_qeb.ir import ops
    from vnncomp_qeb.ir.fuse import normalise

    rng = np.random.default_rng(0)
    W0, W1 = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    nodes = [h.make_node("MatMul", ["x", "W0"], ["z"]), h.make_node("Max", ["z", "zero"], ["a"]),
             h.make_node("Min", ["a", "six"], ["r"]), h.make_node("MatMul", ["r", "W1"], ["y"])]
    inits = [nh.from_array(W0, "W0"), nh.from_array(W1, "W1"), nh.from_array(np.array(0, np.float32), "zero"),
             nh.from_array(np.array(6, np.float32), "six")]
    path = M.save(nodes, inits, tmp_path / "relu6.onnx", 3, 2)
    g = load_onnx(path)
    clips = [op for op in normalise(g).ops if isinstance(op, ops.Clip)]
    assert len(clips) == 1 and (clips[0].lo, clips[0].hi) == (0.0, 6.0)
    x = rng.uniform(-4, 4, size=(2000, 3))
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x.astype(np.float32)})[0]
    np.testing.assert_allclose(g.evaluate(x.astype(np.float32).astype(np.float64)), y, rtol=1e-5, atol=1e-5)
    lo, hi = output_bounds(normalise(g), np.full((1, 3), -4.0), np.full((1, 3), 4.0))
    assert np.all(y >= lo) and np.all(y <= hi)
    both = M.save([h.make_node("Max", ["x", "x"], ["y"])], [], tmp_path / "max2.onnx", 3, 3)
    np.testing.assert_array_equal(load_onnx(both).evaluate(x[:5]), x[:5])  # max(x, x) = x + relu(0)
    absolute = M.save([h.make_node("Neg", ["x"], ["n"]), h.make_node("Max", ["x", "n"], ["y"])], [], tmp_path / "abs.onnx", 3, 3)
    np.testing.assert_array_equal(load_onnx(absolute).evaluate(x[:5]), np.abs(x[:5]))


def test_models_without_a_batch_axis(tmp_path):
    """A rank-1 input (no batch axis, as the VNN-LIB 2.0 conformance suite writes models):
    Reshape, Flatten and Concat count axes from the model's own first axis; a constant operand
    of Concat is kept in place."""
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    nodes = [h.make_node("Concat", ["x", "c"], ["xc"], axis=0),
             h.make_node("Reshape", ["xc", "shape"], ["r"]),
             h.make_node("Flatten", ["r"], ["y"], axis=1)]
    inits = [nh.from_array(np.array([10.0, -3.0], np.float32), "c"), nh.from_array(np.array([2, 3], np.int64), "shape")]
    graph = h.make_graph(nodes, "nobatch", [h.make_tensor_value_info("x", T.FLOAT, [4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 3])], inits)
    path = str(tmp_path / "nobatch.onnx")
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), path)
    g = load_onnx(path)
    assert g.input_shape == (4,) and g.output_size == 6
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(size=4).astype(np.float32)
        np.testing.assert_array_equal(g.evaluate(x[None].astype(np.float64))[0], sess.run(None, {"x": x})[0].ravel())


def test_clamp_of_a_clamp_below_it(tmp_path):
    """``Min(Max(x, 0), −1)`` is −1 everywhere: the merged clamp must say so (found by review)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from vnncomp_qeb.analysis.dra import MODES, difference_bounds
    from vnncomp_qeb.ir.fuse import normalise

    nodes = [h.make_node("Max", ["x", "zero"], ["a"]), h.make_node("Min", ["a", "m1"], ["y"])]
    inits = [nh.from_array(np.array(0, np.float32), "zero"), nh.from_array(np.array(-1, np.float32), "m1")]
    path = M.save(nodes, inits, tmp_path / "cc.onnx", 2, 2)
    g = normalise(load_onnx(path))
    for mode in MODES:
        lo, hi = difference_bounds(g, np.full((1, 2), -3.0), np.full((1, 2), 3.0), mode)
        assert np.all(lo <= -1.0) and np.all(hi >= -1.0) and np.all(hi <= -1.0 + 1e-6), mode
