"""VNN-LIB 2.0 theories beyond one network with one input and one output: several inputs per
network (MIO), hidden variables (H), linear constraints over inputs, outputs and hidden values
together (LIN), a network ``equal-to`` another (MENET) and one ``isomorphic-to`` another at
float16 (MINET). Verdicts are checked against exhaustive enumeration of snapped inputs (or, for the
float16 twin, against onnxruntime on the converted model); every sat is replayed."""

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import models as M
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.replay import joint_output
from vnncomp_qeb.portfolio import verify

SCALE = 0.25
GRID = np.arange(0, 5) * SCALE  # the codes 0..4 of each snapped input over [0, 1]


@pytest.fixture(scope="module")
def two_input_net(tmp_path_factory):
    """Inputs a [1, 2] and b [1, 1], each snapped by QuantizeLinear; hidden h = qa·W + qb·c,
    output y = Relu(h) + qa[1] (named tensors: 'h', 'y')."""
    rng = np.random.default_rng(5)
    W = rng.normal(size=(2, 2)).astype(np.float32)
    nodes = [h.make_node("QuantizeLinear", ["a", "s", "z"], ["qa8"]), h.make_node("DequantizeLinear", ["qa8", "s", "z"], ["qa"]),
             h.make_node("QuantizeLinear", ["b", "s", "z"], ["qb8"]), h.make_node("DequantizeLinear", ["qb8", "s", "z"], ["qb"]),
             h.make_node("MatMul", ["qa", "W"], ["m"]), h.make_node("Mul", ["qb", "c"], ["bc"]),
             h.make_node("Add", ["m", "bc"], ["h"]), h.make_node("Relu", ["h"], ["r"]),
             h.make_node("Slice", ["qa", "one", "two", "one"], ["a1"]), h.make_node("Add", ["r", "a1"], ["y"])]
    inits = [nh.from_array(np.float32(SCALE), "s"), nh.from_array(np.uint8(0), "z"), nh.from_array(W, "W"),
             nh.from_array(np.array([1.5, -2.0], np.float32), "c"),
             nh.from_array(np.array([1], np.int64), "one"), nh.from_array(np.array([2], np.int64), "two")]
    g = h.make_graph(nodes, "two_in", [h.make_tensor_value_info("a", T.FLOAT, [1, 2]), h.make_tensor_value_info("b", T.FLOAT, [1, 1])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 2])], inits)
    path = tmp_path_factory.mktemp("theories") / "two_in.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess_h = ort.InferenceSession(_with_hidden(path), providers=["CPUExecutionProvider"])
    points = []
    for a0, a1, b in itertools.product(GRID, GRID, GRID):
        a = np.array([[a0, a1]], np.float32)
        bb = np.array([[b]], np.float32)
        y = sess.run(None, {"a": a, "b": bb})[0].reshape(-1)
        hid = sess_h.run(["h"], {"a": a, "b": bb})[0].reshape(-1)
        points.append((np.array([a0, a1, b]), y.astype(np.float64), hid.astype(np.float64)))
    return str(path), points


def _with_hidden(path):
    m = onnx.load(str(path))
    m.graph.output.append(onnx.ValueInfoProto(name="h"))
    out = str(path).replace(".onnx", "_h.onnx")
    onnx.save(m, out)
    return out


HEADER = """(vnnlib-version <2.0>)
(declare-network N
  (declare-input A float32 [1,2])
  (declare-input B float32 [1,1])
  {hidden}
  (declare-output Y float32 [1,2]))
(assert (and (>= A[0,0] 0.0) (<= A[0,0] 1.0) (>= A[0,1] 0.0) (<= A[0,1] 1.0) (>= B[0,0] 0.0) (<= B[0,0] 1.0)))
"""


def _decide(tmp_path, net, text):
    spec = tmp_path / "q.vnnlib"
    spec.write_text(text)
    inst = load_instance(str(spec), {"N": net})
    out = verify(inst, 60, log=lambda _: None)
    if out.verdict == "sat":  # the witness is what onnxruntime confirms
        assert inst.spec.violated(np.asarray(out.replay.x, np.float64)[None], joint_output(inst, out.replay.x)[None])[0]
    return out.verdict


def _lo(v):  # the real inputs that snap to the grid value v: [v − s/2, v + s/2] within [0, 1]
    return max(0.0, v - SCALE / 2)


def _hi(v):
    return min(1.0, v + SCALE / 2)


# (hidden declaration, property, whether some real input snapping to grid point x meets the input
# part, the supremum over those inputs of the quantity compared with t); the ±0.05 around the
# supremum covers both a cell's open ends and the snapping of ties
PROPERTIES = [
    ("", "(assert (>= (- Y[0,0] B[0,0]) {t}))", lambda x: True, lambda x, y, hd: y[0] - _lo(x[2]), "y0 - b"),
    ("", "(assert (and (>= (+ (* 0.5 A[0,0]) (* 0.75 A[0,1])) 0.61) (>= Y[0,1] {t})))",
     lambda x: 0.5 * _hi(x[0]) + 0.75 * _hi(x[1]) > 0.61, lambda x, y, hd: y[1], "y1 on a half-plane of inputs"),
    ('(declare-hidden H float32 [1,2] "h")', "(assert (>= (+ H[0,1] A[0,0]) {t}))", lambda x: True,
     lambda x, y, hd: hd[1] + _hi(x[0]), "h1 + a0"),
    ('(declare-hidden H float32 [1,2] "h")', "(assert (or (>= H[0,0] {t}) (<= Y[0,1] (- 0.0 {t}))))", lambda x: True,
     lambda x, y, hd: max(hd[0], -y[1]), "h0 or -y1"),
    # POLY: products of outputs, hidden values and inputs
    ('(declare-hidden H float32 [1,2] "h")', "(assert (>= (- (* Y[0,0] Y[0,1]) (* 0.5 H[0,1] H[0,1])) {t}))", lambda x: True,
     lambda x, y, hd: y[0] * y[1] - 0.5 * hd[1] ** 2, "y0·y1 − h1²/2"),
    ("", "(assert (>= (* B[0,0] Y[0,0]) {t}))", lambda x: True,
     lambda x, y, hd: y[0] * (_hi(x[2]) if y[0] >= 0 else _lo(x[2])), "b·y0"),
]


@pytest.mark.parametrize("hidden, prop, region, value, label", PROPERTIES, ids=[p[4] for p in PROPERTIES])
def test_several_inputs_hidden_and_linear_constraints_match_enumeration(tmp_path, two_input_net, hidden, prop, region,
                                                                       value, label):
    net, points = two_input_net
    best = max(value(x, y, hd) for x, y, hd in points if region(x))
    for t in (best - 0.05, best + 0.05):
        verdict = _decide(tmp_path, net, HEADER.format(hidden=hidden) + prop.format(t=f"{t:.6f}") + "\n")
        assert verdict == ("sat" if t <= best else "unsat"), (label, t, best, verdict)


def test_equal_to_network_reads_the_same_file(tmp_path):
    """N2 (equal-to N1) is N1 again on its own input: Y2 ≤ Y over x in [0, 1], x2 in [2, 3]."""
    path = tmp_path / "n.onnx"
    M.float_mlp(str(path), sizes=(2, 6, 1), seed=4)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pts = np.array(list(itertools.product(np.linspace(0, 1, 41), repeat=2)), np.float32)
    y = sess.run(None, {sess.get_inputs()[0].name: pts})[0].reshape(-1)
    y2 = sess.run(None, {sess.get_inputs()[0].name: pts + 2})[0].reshape(-1)
    text = """(vnnlib-version <2.0>)
(declare-network N1 (declare-input X float32 [1,2]) (declare-output Y float32 [1,1]))
(declare-network N2 (equal-to N1) (declare-input X2 float32 [1,2]) (declare-output Y2 float32 [1,1]))
(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0)))
(assert (and (>= X2[0,0] 2.0) (<= X2[0,0] 3.0) (>= X2[0,1] 2.0) (<= X2[0,1] 3.0)))
(assert (>= (- Y2[0,0] Y[0,0]) {t}))
"""
    gap = float(y2.max() - y.min())  # attained: a sampled pair of points
    spec = tmp_path / "e.vnnlib"
    spec.write_text(text.format(t=f"{gap - 0.01:.6f}"))
    inst = load_instance(str(spec), {"N": str(path)})  # one file, given under another name
    assert inst.views["N2"].path == str(path)
    assert verify(inst, 60, log=lambda _: None).verdict == "sat"
    spec.write_text(text.format(t=f"{2 * abs(gap) + 10:.6f}"))
    assert verify(load_instance(str(spec), {"N1": str(path)}), 60, log=lambda _: None).verdict == "unsat"


def test_isomorphic_to_at_float16_is_the_converted_model(tmp_path):
    """N2 (isomorphic-to N1, declared float16) is N1 converted to float16: the joint graph computes
    what onnxruntime computes on the converted model, and the error-bound query between the two is
    decided on both sides of the sampled maximum difference."""
    from onnxconverter_common import float16

    path = tmp_path / "n.onnx"
    M.float_mlp(str(path), sizes=(2, 16, 16, 1), seed=2)
    conv = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=False)
    s32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"])
    pts = np.array(list(itertools.product(np.linspace(-1, 1, 61), repeat=2)), np.float32)
    diff = (s32.run(None, {s32.get_inputs()[0].name: pts})[0].astype(np.float64)
            - s16.run(None, {s16.get_inputs()[0].name: pts.astype(np.float16)})[0].astype(np.float64)).reshape(-1)
    text = """(vnnlib-version <2.0>)
(declare-network N1 (declare-input X float32 [1,2]) (declare-output Y float32 [1,1]))
(declare-network N2 (isomorphic-to N1) (declare-input X2 float16 [1,2]) (declare-output Y2 float16 [1,1]))
(assert (and (>= X[0,0] -1.0) (<= X[0,0] 1.0) (>= X[0,1] -1.0) (<= X[0,1] 1.0)))
(assert (and (== X[0,0] X2[0,0]) (== X[0,1] X2[0,1])))
(assert (or (>= (- Y[0,0] Y2[0,0]) {t}) (<= (- Y[0,0] Y2[0,0]) (- 0.0 {t}))))
"""
    spec = tmp_path / "i.vnnlib"
    spec.write_text(text.format(t="0.5"))
    inst = load_instance(str(spec), {"N1": str(path), "N2": str(path)})
    assert inst.views["N2"].precision == "float16"
    y = np.stack([joint_output(inst, p) for p in pts[:50]])
    np.testing.assert_array_equal(y[:, 0] - y[:, 1], diff[:50])
    worst = float(np.abs(diff).max())
    assert worst > 0
    spec.write_text(text.format(t=f"{worst * 0.5:.9g}"))  # a difference many sampled inputs exceed
    assert verify(load_instance(str(spec), {"N1": str(path)}), 60, log=lambda _: None).verdict == "sat"
    spec.write_text(text.format(t=f"{worst * 50 + 0.05:.6g}"))
    assert verify(load_instance(str(spec), {"N1": str(path)}), 60, log=lambda _: None).verdict == "unsat"


def test_supports_claims_the_theories():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vnncomp_qeb", "supports", "--multiple-network-theories",
                          "--hidden-node-theories", "--multiple-input-output-theories", "--arithmetic-complexity-theories"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert {"MENET", "MINET", "H", "MIO", "LIN", "POLY"} <= set(out)


def test_networks_fed_at_different_types(tmp_path):
    """N reads float64, Q float32: the joint input is fed as float64 (the finer type) and Q's IR
    rounds it to float32 as onnxruntime receives it (N's does not): the joint graph computes what
    the replay computes, and its bounds over a box hold every replayed output."""
    from vnncomp_qeb.analysis.interval import output_bounds
    from vnncomp_qeb.io.replay import input_type

    rng = np.random.default_rng(3)
    W = rng.normal(size=(3, 2))
    paths = {}
    for name, elem, dt in (("n64", T.DOUBLE, np.float64), ("q32", T.FLOAT, np.float32)):
        g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"])], name, [h.make_tensor_value_info("x", elem, [1, 3])],
                         [h.make_tensor_value_info("y", elem, [1, 2])], [nh.from_array(W.astype(dt), "W")])
        paths[name] = str(tmp_path / f"{name}.onnx")
        onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=M.IR_VERSION), paths[name])
    text = """(vnnlib-version <2.0>)
(declare-network N (declare-input X float64 [1,3]) (declare-output Y float64 [1,2]))
(declare-network Q (declare-input XQ float64 [1,3]) (declare-output YQ float64 [1,2]))
(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0) (>= X[0,2] 0.0) (<= X[0,2] 1.0)))
(assert (and (== X[0,0] XQ[0,0]) (== X[0,1] XQ[0,1]) (== X[0,2] XQ[0,2])))
(assert (>= Y[0,0] 10.0))
"""
    spec = tmp_path / "t.vnnlib"
    spec.write_text(text)
    inst = load_instance(str(spec), {"N": paths["n64"], "Q": paths["q32"]})
    assert input_type(inst) == np.float64
    casts = [op.output.split("/")[0] for op in inst.graph.ops if op.kind == "CastFloat"]
    assert casts == ["Q"]
    x = rng.uniform(0, 1, size=(200, 3))
    y = np.stack([joint_output(inst, xi) for xi in x])
    np.testing.assert_allclose(inst.graph.evaluate(x), y, rtol=1e-6, atol=1e-7)
    lo, hi = output_bounds(inst.graph, np.zeros((1, 3)), np.ones((1, 3)))
    assert np.all((y >= lo) & (y <= hi))


def test_isomorphic_declaration_that_does_not_match_is_refused(tmp_path):
    """An isomorphic-to network declaring other variables than its target: the parser's own message."""
    from vnncomp_qeb.errors import SpecError
    from vnncomp_qeb.io.vnnlib import load_spec

    spec = tmp_path / "bad.vnnlib"
    spec.write_text("""(vnnlib-version <2.0>)
(declare-network N1 (declare-input X float32 [1]) (declare-output Y float32 [1]))
(declare-network N2 (isomorphic-to N1) (declare-input X2 float16 [1]) (declare-input X3 float16 [1])
  (declare-output Y2 float16 [1]))
(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X2[0] 0.0) (<= X2[0] 1.0) (>= X3[0] 0.0) (<= X3[0] 1.0)))
(assert (<= (- Y[0] Y2[0]) 0.5))
""")
    with pytest.raises(SpecError, match="bad.vnnlib"):
        load_spec(str(spec))
