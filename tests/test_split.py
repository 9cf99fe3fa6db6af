"""The branch-and-bound split: the bounds' input coefficients, the dimension a box is split
along, and the NeuroDiff benchmark it decides (float16 weight twin of ACAS Xu 1_1 on property 1's
region), with ground truth from dense sampling and a witness replayed by onnxruntime."""

import os

import numpy as np
import onnx
import pytest
from conftest import ROOT

from vnncomp_qeb.analysis.dra import row_lower_bounds
from vnncomp_qeb.io.fixed_point import load_qebnet
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.mlp_writer import mlp_model
from vnncomp_qeb.io.onnx_loader import model_to_graph
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.results import SAT, UNSAT
from vnncomp_qeb.io.twin_writer import build_twin
from vnncomp_qeb.io.vnnlib import load_spec
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.ir.fuse import normalise
from vnncomp_qeb.portfolio import verify
from vnncomp_qeb.search.domains import CodeDomain, RealDomain

NETS = os.path.join(ROOT, "specs", "networks")


def test_input_coefficients_are_the_linear_map():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    graph = normalise(model_to_graph(mlp_model([W], [b])))
    A = rng.normal(size=(5, 3))
    lo, hi = -np.ones((2, 4)), np.ones((2, 4))
    got: list = []
    rows = row_lower_bounds(graph, lo, hi, A, got)
    # A·(Wᵀx + b) has input coefficients A·Wᵀ; its minimum over the box is attained exactly
    expected = A @ W.astype(np.float32).T
    np.testing.assert_allclose(got[0], np.broadcast_to(expected, (2, 5, 4)), rtol=1e-6)
    exact = -np.abs(expected).sum(axis=1) + A @ b.astype(np.float32)
    np.testing.assert_allclose(rows, np.broadcast_to(exact, (2, 5)), rtol=1e-5, atol=1e-5)
    assert np.all(rows <= exact + 1e-9)


def test_split_follows_the_score():
    graph = normalise(model_to_graph(mlp_model([np.eye(3)], [np.zeros(3)])))
    real = RealDomain(graph)
    real.width0 = np.ones(3)
    L, U = np.zeros((3, 3)), np.array([[1.0, 2.0, 1.0]] * 3)
    score = np.array([[0.0, 0.1, 5.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    lo, hi = real.split(L, U, score)
    halved = np.argmax(hi[:3] < U, axis=1)  # the left children's shortened side
    assert list(halved) == [2, 1, 0]  # best score; widest where no score is positive
    assert list(np.argmax(real.split(L, U)[1][:3] < U, axis=1)) == [1, 1, 1]

    code = CodeDomain.__new__(CodeDomain)  # split needs no network
    L, U = np.array([[0.0, 3.0, 0.0]]), np.array([[4.0, 3.0, 1.0]])
    lo, hi = code.split(L, U, np.array([[0.0, 9.0, 1.0]]))  # input 1 is one code: cannot split
    assert hi[0, 2] == 0 and lo[1, 2] == 1 and np.all(hi[0, :2] == U[0, :2])


@pytest.fixture(scope="module")
def f16_twin(tmp_path_factory):
    d = tmp_path_factory.mktemp("f16")
    net = load_qebnet(os.path.join(NETS, "qebverif", "ACASXU_run2a_1_1_batch_2000.npz"))
    half = lambda v: np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)  # noqa: E731
    onnx.save(mlp_model(net.weights, net.biases), str(d / "n.onnx"))
    onnx.save(mlp_model([half(W) for W in net.weights], [half(b) for b in net.biases]), str(d / "q.onnx"))
    onnx.save(build_twin(str(d / "n.onnx"), str(d / "q.onnx")), str(d / "twin.onnx"))
    case = load_spec(os.path.join(NETS, "acasxu", "prop_1.vnnlib")).cases[0]
    return d, case


def _instance(d, case, eps):
    spec = d / f"eps{eps:g}.vnnlib"
    spec.write_text(error_bound_v1(case.lower, case.upper, eps, list(range(5)), 5))
    return load_instance(str(spec), str(d / "twin.onnx"))


def test_float16_acas_twin_decided_both_ways(f16_twin):
    d, case = f16_twin
    inst = _instance(d, case, 0.05)
    rng = np.random.default_rng(0)
    x = case.lower + (case.upper - case.lower) * rng.random((100_000, 5))
    worst = float(np.abs(inst.graph.evaluate(x)).max())
    assert worst < 0.01  # dense sampling: the true maximum is far below ε = 0.05
    # NeuroDiff proves this in seconds; widest-side splitting did not within minutes
    assert verify(inst, timeout=60, log=lambda _: None).verdict == UNSAT
    below = _instance(d, case, worst / 2)
    out = verify(below, timeout=60, log=lambda _: None)
    assert out.verdict == SAT
    assert replay(below, out.replay.x).ok
