"""Data-movement and reduction operators (Transpose, Slice, Split, Gather, Expand, Tile, Squeeze,
Unsqueeze, DepthToSpace, ReduceSum, ReduceMean, Neg, Shape/ConstantOfShape): each, inside a small
network, evaluates as onnxruntime does, keeps every sampled onnxruntime output inside the bounds of
every analysis mode, back-substitutes to the network's exact Jacobian, and gives the verdict that
exhaustive enumeration gives."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import models as M
from vnncomp_qeb.analysis.backsub import linear_bounds
from vnncomp_qeb.analysis.dra import MODES, difference_bounds, refined_bounds
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.ir.fuse import normalise


def _i64(name, values):
    return nh.from_array(np.asarray(values, dtype=np.int64), name)


# (name, input shape with batch, nodes after "x" → "m", constant initializers)
CASES = [
    ("transpose", ["N", 2, 3, 4], [h.make_node("Transpose", ["x"], ["m"], perm=[0, 2, 3, 1])], []),
    ("slice", ["N", 3, 5], [h.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["m"])],
     [_i64("st", [4, 0]), _i64("en", [-6, 2]), _i64("ax", [2, 1]), _i64("sp", [-2, 1])]),
    ("split", ["N", 5], [h.make_node("Split", ["x", "parts"], ["a", "b"], axis=1),
                         h.make_node("Concat", ["b", "a"], ["m"], axis=1)], [_i64("parts", [2, 3])]),
    ("gather", ["N", 2, 3], [h.make_node("Gather", ["x", "idx"], ["m"], axis=2)], [_i64("idx", [[2, 0], [1, 1]])]),
    ("expand", ["N", 2, 1], [h.make_node("Expand", ["x", "to"], ["m"])], [_i64("to", [1, 2, 3])]),
    ("tile", ["N", 2], [h.make_node("Tile", ["x", "rep"], ["m"])], [_i64("rep", [1, 3])]),
    ("unsqueeze", ["N", 3], [h.make_node("Unsqueeze", ["x", "ax"], ["u"]),
                             h.make_node("Squeeze", ["u", "ax2"], ["m"])], [_i64("ax", [1, 3]), _i64("ax2", [3])]),
    ("depth2space", ["N", 4, 2, 2], [h.make_node("DepthToSpace", ["x"], ["m"], blocksize=2)], []),
    ("reducesum", ["N", 2, 3], [h.make_node("ReduceSum", ["x", "ax"], ["m"], keepdims=1)], [_i64("ax", [-1])]),
    ("reducemean", ["N", 2, 3], [h.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0)], []),
    ("neg", ["N", 3], [h.make_node("Neg", ["x"], ["m"])], []),
    ("shape", ["N", 2, 3], [h.make_node("Shape", ["x"], ["s"]),
                            h.make_node("ConstantOfShape", ["s"], ["c"], value=nh.from_array(np.array([0.5], np.float32))),
                            h.make_node("Add", ["x", "c"], ["m"])], []),
    ("space2depth", ["N", 1, 4, 4], [h.make_node("SpaceToDepth", ["x"], ["m"], blocksize=2)], []),
    ("gather-elements", [1, 2, 3], [h.make_node("GatherElements", ["x", "ge"], ["m"], axis=2)],
     [_i64("ge", [[[2, 0, 0], [1, 1, 2]]])]),
    ("gather-nd", [1, 2, 3], [h.make_node("GatherND", ["x", "gn"], ["m"], batch_dims=1)], [_i64("gn", [[[1, 2], [0, 0]]])]),
    ("reverse", [1, 3, 2], [h.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
                              h.make_node("ReverseSequence", ["t", "lens"], ["rv"], batch_axis=1, time_axis=0),
                              h.make_node("Transpose", ["rv"], ["m"], perm=[1, 0, 2])], [_i64("lens", [2])]),
    ("pad-constant", ["N", 2, 3], [h.make_node("Pad", ["x", "pads", "v"], ["m"], mode="constant")],
     [_i64("pads", [0, 1, 0, 0, 0, 2]), nh.from_array(np.array(0.75, np.float32), "v")]),
    ("pad-reflect", ["N", 2, 4], [h.make_node("Pad", ["x", "pads"], ["m"], mode="reflect")], [_i64("pads", [0, 0, 2, 0, 0, 1])]),
    ("pad-edge-axes", ["N", 2, 3], [h.make_node("Pad", ["x", "pads", "", "axes"], ["m"], mode="edge")],
     [_i64("pads", [1, 2]), _i64("axes", [2])]),
    # a fixed leading 1 that the graph transposes away: the whole input is one sample
    ("transpose-fixed", [1, 3], [h.make_node("Transpose", ["x"], ["m"], perm=[1, 0])], []),
]
OPSET = {"reducemean": 13}


def _model(tmp_path, name, in_shape, nodes, inits, rng):
    """x → the op(s) → Relu → Flatten-free Gemm to 3 outputs (so the op sits inside a network)."""
    sess_shape = [1 if d == "N" else d for d in in_shape]
    probe = h.make_graph(nodes, "p", [h.make_tensor_value_info("x", T.FLOAT, in_shape)],
                         [h.make_tensor_value_info("m", T.FLOAT, None)], inits)
    probe_path = tmp_path / "probe.onnx"
    onnx.save(h.make_model(probe, opset_imports=[h.make_opsetid("", OPSET.get(name, 18))], ir_version=M.IR_VERSION),
              str(probe_path))
    s = ort.InferenceSession(str(probe_path), providers=["CPUExecutionProvider"])
    m_shape = s.run(None, {"x": np.zeros(sess_shape, np.float32)})[0].shape
    k = int(np.prod(m_shape))
    W = rng.normal(size=(k, 3)).astype(np.float32)
    tail = [h.make_node("Relu", ["m"], ["r"]),
            h.make_node("Reshape", ["r", "flat"], ["f"]),
            h.make_node("MatMul", ["f", "W"], ["y"])]
    flat = [1, k] if in_shape[0] == "N" or in_shape[0] == 1 else [k]
    g = h.make_graph(nodes + tail, name, [h.make_tensor_value_info("x", T.FLOAT, in_shape)],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     inits + [_i64("flat", flat), nh.from_array(W, "W")])
    path = tmp_path / f"{name}.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", OPSET.get(name, 18))], ir_version=M.IR_VERSION), str(path))
    return str(path), sess_shape


@pytest.mark.parametrize("name, in_shape, nodes, inits", CASES, ids=[c[0] for c in CASES])
def test_op_in_a_network(tmp_path, name, in_shape, nodes, inits):
    rng = np.random.default_rng(len(name))
    path, shape = _model(tmp_path, name, in_shape, nodes, inits, rng)
    graph = normalise(load_onnx(path))
    n = graph.input_size
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    xs = rng.uniform(-1, 1, size=(64, n)).astype(np.float32)
    y = np.stack([sess.run(None, {"x": x.reshape(shape)})[0].reshape(-1) for x in xs]).astype(np.float64)
    # the reference evaluator (float64) agrees with onnxruntime (float32) to its rounding
    np.testing.assert_allclose(graph.evaluate(xs.astype(np.float64)), y, rtol=1e-5, atol=1e-5)
    lo, hi = -np.ones(n), np.ones(n)
    for mode in MODES:
        blo, bhi = difference_bounds(graph, lo[None], hi[None], mode)
        assert np.all(y >= blo) and np.all(y <= bhi), mode
    # back-substitution through the op (up to the Relu) is the op's exact linear map
    probe = normalise(load_onnx(path))
    pre = next(op.inputs[0] for op in probe.ops if op.kind == "Relu")
    x0 = rng.normal(size=n)
    values = probe.run(x0.reshape((1,) + tuple(probe.input_shape)), keep_all=True)
    base = values[pre].reshape(-1)
    J = np.stack([probe.run((x0 + np.eye(n)[j]).reshape((1,) + tuple(probe.input_shape)), keep_all=True)[pre].reshape(-1)
                  - base for j in range(n)], axis=1)
    bounds, rel = refined_bounds(probe, (x0 - 1)[None], (x0 + 1)[None])
    coeffs: list = []
    linear_bounds(probe, bounds, rel, pre, np.eye(base.size), coeffs)
    np.testing.assert_allclose(coeffs[0][0, :base.size], J, rtol=1e-9, atol=1e-9)


def test_batch_crossing_on_a_free_batch_axis_is_refused(tmp_path):
    """With a free batch axis a Transpose that moves it is not a per-sample op: a clear refusal."""
    from vnncomp_qeb.errors import UnsupportedOperator

    g = h.make_graph([h.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], "t",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])], [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "t.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)], ir_version=M.IR_VERSION), str(path))
    with pytest.raises(UnsupportedOperator, match="batch axis"):
        load_onnx(str(path))


def test_verdicts_match_enumeration_through_slice_and_reducesum(tmp_path):
    """y = ReduceSum(Relu(Slice(x)·w)) on a 3-point-per-axis grid of snapped inputs: the verdict at
    each threshold is what enumerating every grid point says."""
    import itertools

    from vnncomp_qeb.io.instance import load_instance
    from vnncomp_qeb.portfolio import verify

    rng = np.random.default_rng(3)
    w = rng.normal(size=(1, 3)).astype(np.float32)
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), h.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             h.make_node("Slice", ["d", "st", "en", "ax"], ["sl"]), h.make_node("Mul", ["sl", "w"], ["p"]),
             h.make_node("Relu", ["p"], ["r"]), h.make_node("ReduceSum", ["r", "ax2"], ["y"], keepdims=1)]
    inits = [nh.from_array(np.float32(0.5), "s"), nh.from_array(np.uint8(0), "z"), _i64("st", [1]), _i64("en", [4]),
             _i64("ax", [1]), nh.from_array(w, "w"), _i64("ax2", [1])]
    g = h.make_graph(nodes, "e", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    path = tmp_path / "e.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)], ir_version=M.IR_VERSION), str(path))
    grid = np.array(list(itertools.product([0.0, 0.5, 1.0], repeat=4)), dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    best = max(float(sess.run(None, {"x": x[None]})[0][0, 0]) for x in grid)
    for t in (best - 0.01, best + 0.01):
        spec = tmp_path / "p.vnnlib"
        spec.write_text("".join(f"(declare-const X_{i} Real)\n" for i in range(4)) + "(declare-const Y_0 Real)\n"
                        + "".join(f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))\n" for i in range(4))
                        + f"(assert (>= Y_0 {t}))\n")
        out = verify(load_instance(str(spec), str(path)), 30, log=lambda _: None)
        assert out.verdict == ("sat" if t < best else "unsat"), (t, best, out.verdict)
