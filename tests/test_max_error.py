"""``max-error``: the certified interval brackets the true maximum of |N − Q| every time, closes
exactly on snapped inputs given time (ground truth by exhaustive enumeration in onnxruntime), its
witness replays, and on a real twin no sampled onnxruntime point exceeds ``upper``."""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import EXAMPLES

import models as M
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.replay import joint_output
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.max_error import max_error

SCALE = 0.25


@pytest.mark.parametrize("fmt, seed", [("QDQ", 0), ("QOperator", 1), ("QDQ", 2)])
def test_closes_exactly_on_snapped_inputs(tmp_path, fmt, seed):
    f = M.float_mlp(tmp_path / "f.onnx", sizes=(3, 8, 8, 2), seed=seed)
    q = M.quantize(f, tmp_path / "q.onnx", fmt, True, n_in=3, seed=seed)
    path = M.snapped_twin(f, q, tmp_path / "t.onnx", SCALE)
    rng = np.random.default_rng(seed)
    k_lo = rng.integers(-4, 1, size=3)
    k_hi = k_lo + rng.integers(1, 4, size=3)
    x = M.grid_points(k_lo, k_hi, SCALE)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    truth = float(np.abs(y.astype(np.float64)).max())
    spec = tmp_path / "s.vnnlib"
    spec.write_text(error_bound_v1((k_lo - 0.25) * SCALE, (k_hi + 0.25) * SCALE, 1.0, [0, 1], 2))
    inst = load_instance(str(spec), path)
    quick = max_error(inst, 0.05, log=lambda m: None)  # almost no time: still a bracket
    assert quick.lower <= truth <= quick.upper
    r = max_error(inst, 30.0, log=lambda m: None)
    assert r.lower == pytest.approx(truth, rel=0, abs=0) and r.upper == r.lower, (r.lower, truth, r.upper)
    assert float(np.abs(joint_output(inst, r.witness)).max()) == truth  # the witness attains it
    for i, (lo, hi) in r.outputs.items():
        assert lo <= float(np.abs(y[:, i]).max()) <= hi


def test_real_twin_upper_holds_and_cli_writes_json(tmp_path):
    twin = os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx")
    spec = os.path.join(EXAMPLES, "vnnlib", "twin_p2_r0.001_eps0.2.vnnlib")
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "vnncomp_qeb", "max-error", twin, spec, "--timeout", "5",
                           "--json", str(out), "--plot", str(tmp_path / "m.png"), "--quiet"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {"lower", "upper", "witness", "time", "outputs"} and (tmp_path / "m.png").stat().st_size > 0
    assert 0 < data["lower"] <= data["upper"] < np.inf
    inst = load_instance(spec, twin)
    case = inst.spec.cases[0]
    rng = np.random.default_rng(0)
    x = rng.uniform(case.lower, case.upper, size=(2000, case.lower.size))
    x[:400] = np.where(rng.random((400, case.lower.size)) < 0.5, case.lower, case.upper)
    sess = ort.InferenceSession(twin, providers=["CPUExecutionProvider"])  # batch of one
    y = np.abs(np.array([sess.run(None, {"X": xi.reshape(1, 1, 1, 5).astype(np.float32)})[0].ravel() for xi in x]))
    assert y.max() <= data["upper"]
    for i, bounds in data["outputs"].items():
        assert y[:, int(i)].max() <= bounds["upper"]
    assert float(np.abs(joint_output(inst, np.array(data["witness"]))).max()) == pytest.approx(data["lower"], rel=1e-7)
    # branch and bound never reports more than the DRA's bound of the whole region (a part's bound
    # can come out looser than its box's: the box's own holds there too)
    from vnncomp_qeb.analysis.dra import difference_bounds
    from vnncomp_qeb.max_error import _Search
    from vnncomp_qeb.search.domains import domain_for

    search = _Search(inst, np.inf, lambda m: None, 0)
    dom = domain_for(inst.graph, search.dtype)
    L, U = dom.initial(search.case)
    lo, hi = difference_bounds(dom.analysis_graph, L, U, "best")
    assert data["upper"] <= float(np.max(np.maximum(-lo, hi)[0, search.outputs]))


def test_milp_phase_keeps_the_bracket(tmp_path, monkeypatch):
    """A wide region (8 snapped inputs, 65,536 grid points): branch and bound then the MILP's dual
    bounds per output and sign; the interval still brackets the enumerated maximum."""
    import vnncomp_qeb.max_error as me
    from test_neighbourhood import N_IN, _case, _twin

    path = _twin(tmp_path / "t.onnx", 5, 4)
    k_lo = np.full(N_IN, -2.0)
    inst, dom = _case(tmp_path, path, k_lo, 1.0)
    # the faithful fixed-point twin is exact in float64: its evaluator is onnxruntime's
    truth = float(np.abs(dom.graph.evaluate(M.grid_points(k_lo, k_lo + 3, 1.0).astype(np.float64))[:, 0]).max())
    monkeypatch.setattr(me, "MILP_DIMS", 4)
    monkeypatch.setattr(me, "SPLIT_SHARE", 0.0)  # the root bound, then the MILP at once
    import vnncomp_qeb.isolate as iso

    calls = []
    real = iso.run_isolated_all
    monkeypatch.setattr(iso, "run_isolated_all", lambda *a, **k: calls.extend(real(*a, **k)) or calls[-len(a[0]):])
    r = max_error(inst, 12.0, log=lambda m: None)
    assert r.lower <= truth <= r.upper, (r.lower, truth, r.upper)
    # the MILP ran (both signs of each open output) and bounded each side (−inf: that sign cannot
    # reach the lower value at all)
    assert len(calls) >= 2 and all(c.status == iso.OK and c.value[0] < np.inf for c in calls)
    assert r.upper - r.lower < 1e-6  # its dual bounds closed what the root bound left open
