"""Verdicts against ground truth from exhaustive grid enumeration: ε 0.1 % above and below the
true maximum of |N − Q| over the snapped grid, on every quantize_static form. Never a wrong
answer, every `sat` replayed by onnxruntime."""

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import models as M
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.results import SAT, UNSAT
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.portfolio import verify

SCALE = 0.25  # input grid (power of two: float32-exact)
FORMS = [(fmt, pc, gemm) for fmt in ("QDQ", "QOperator") for pc in (False, True) for gemm in (True, False)]
CASES = [(form, seed) for form, seed in itertools.product(FORMS, range(4))]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    d = tmp_path_factory.mktemp("gt")
    out = {}
    for (fmt, pc, gemm), seed in CASES:
        f = M.float_mlp(d / f"f_{gemm}_{seed}.onnx", sizes=(3, 8, 8, 2), seed=seed, gemm=gemm)
        q = M.quantize(f, d / f"q_{fmt}_{pc}_{gemm}_{seed}.onnx", fmt, pc, n_in=3, seed=seed)
        out[((fmt, pc, gemm), seed)] = (d, M.snapped_twin(f, q, d / f"t_{fmt}_{pc}_{gemm}_{seed}.onnx", SCALE))
    return out


def _true_max(path, k_lo, k_hi):
    x = M.grid_points(k_lo, k_hi, SCALE)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    return float(np.abs(y.astype(np.float64)).max())


@pytest.mark.parametrize("form, seed", CASES, ids=[f"{f[0]}-pc{int(f[1])}-gemm{int(f[2])}-s{s}" for f, s in CASES])
def test_verdicts_match_enumeration(twins, form, seed):
    d, path = twins[(form, seed)]
    rng = np.random.default_rng(seed)
    k_lo = rng.integers(-4, 1, size=3)
    k_hi = k_lo + rng.integers(1, 4, size=3)
    lower, upper = (k_lo - 0.25) * SCALE, (k_hi + 0.25) * SCALE  # grid points strictly inside
    top = _true_max(path, k_lo, k_hi)
    assert top > 0
    for eps, truth in ((top * 1.001, UNSAT), (top * 0.999, SAT)):
        spec = d / f"s_{form}_{seed}_{truth}.vnnlib"
        spec.write_text(error_bound_v1(lower, upper, eps, [0, 1], 2))
        inst = load_instance(str(spec), path)
        out = verify(inst, timeout=3.0, log=lambda m: None)
        assert out.verdict in (truth, "timeout", "unknown"), f"wrong verdict {out.verdict} (truth {truth})"
        assert out.verdict == truth, "snapped inputs: code-space branch and bound is complete"
        if truth == SAT:
            r = replay(inst, np.asarray(out.replay.x, dtype=np.float64))
            assert r.ok and np.all(r.x >= lower) and np.all(r.x <= upper)
            assert np.abs(r.y).max() >= eps


@pytest.mark.parametrize("snap", ["round", "floor_half"])
def test_input_snapped_by_round_is_split_on_codes(tmp_path, snap):
    """A float64 fixed-point twin whose input is snapped by ``Round(X·255)`` (or
    ``Floor(X·255 + 0.5)``) instead of a QuantizeLinear: branch and bound runs over the codes and
    decides ε just above and below the enumerated maximum (it used to split real boxes forever)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(3)
    W1, W2 = rng.normal(size=(2, 6)), rng.normal(size=(6, 1))
    Q1, Q2 = np.round(W1 * 8) / 8, np.round(W2 * 8) / 8
    nodes = [h.make_node("Mul", ["X", "k"], ["xk"])]
    if snap == "round":
        nodes.append(h.make_node("Round", ["xk"], ["code"]))
    else:
        nodes += [h.make_node("Add", ["xk", "half"], ["xh"]), h.make_node("Floor", ["xh"], ["code"])]
    nodes += [h.make_node("MatMul", ["code", "W1"], ["n1"]), h.make_node("Relu", ["n1"], ["a1"]),
              h.make_node("MatMul", ["a1", "W2"], ["N"]),
              h.make_node("MatMul", ["code", "Q1"], ["q1"]), h.make_node("Mul", ["q1", "s"], ["q1s"]),
              h.make_node("Round", ["q1s"], ["q1r"]), h.make_node("Div", ["q1r", "s"], ["q1d"]),
              h.make_node("Relu", ["q1d"], ["b1"]), h.make_node("MatMul", ["b1", "Q2"], ["Q"]),
              h.make_node("Sub", ["N", "Q"], ["Y"])]
    inits = [nh.from_array(np.array(255.0), "k"), nh.from_array(np.array(0.5), "half"), nh.from_array(np.array(16.0), "s"),
             nh.from_array(W1 / 255, "W1"), nh.from_array(W2, "W2"), nh.from_array(Q1 / 256, "Q1"), nh.from_array(Q2, "Q2")]
    graph = h.make_graph(nodes, "fx", [h.make_tensor_value_info("X", T.DOUBLE, ["N", 2])],
                         [h.make_tensor_value_info("Y", T.DOUBLE, ["N", 1])], inits)
    path = str(tmp_path / "fx.onnx")
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8), path)
    lower, upper = np.array([0.3, 0.5]), np.array([0.3 + 12 / 255, 0.5 + 12 / 255])
    # every reachable code is reached by clip(c/255, lower, upper) (the model snaps it itself)
    codes = M.grid_points(np.floor(lower * 255), np.ceil(upper * 255), 1.0).astype(np.float64)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    top = float(np.abs(sess.run(None, {"X": np.clip(codes / 255, lower, upper)})[0]).max())
    for eps, truth in ((top * 1.001, UNSAT), (top * 0.999, SAT)):
        spec = tmp_path / f"s{truth}.vnnlib"
        spec.write_text(error_bound_v1(lower, upper, eps, [0], 1))
        inst = load_instance(str(spec), path)
        from vnncomp_qeb.search.domains import CodeDomain, domain_for

        assert isinstance(domain_for(inst.graph), CodeDomain)
        out = verify(inst, timeout=10.0, log=lambda m: None)
        assert out.verdict == truth, (out.verdict, out.message)
