"""The VNN-COMP scripts end to end: a verdict always written, exit 0 always, witnesses that
onnxruntime replays, answers before the timeout, no process left behind."""

import gzip
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
from conftest import ACASXU, EXAMPLES, ROOT

import models as M
from vnncomp_qeb.io.instance import load_instance, parse_network_arg
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.results import read_counterexample

TWIN = "onnx/ACASXU_run2a_1_1_batch_2000_int8_twin.onnx"
PAIR = ("[('N', 'onnx/ACASXU_run2a_1_1_batch_2000_float.onnx'), "
        "('Q', 'onnx/ACASXU_run2a_1_1_batch_2000_int8_qdq.onnx')]")
SAT_V1, UNSAT_V1 = "vnnlib/twin_p2_r0.001_eps0.05.vnnlib", "vnnlib/twin_p2_r0.001_eps0.2.vnnlib"
SAT_V2, UNSAT_V2 = "vnnlib/pair_p2_r0.001_eps0.05.vnnlib", "vnnlib/pair_p2_r0.001_eps0.2.vnnlib"


def run_instance(onnx, vnnlib, results, timeout=30, cwd=EXAMPLES, version="v1"):
    proc = subprocess.run([os.path.join(ROOT, "run_instance.sh"), version, "test", str(onnx), str(vnnlib),
                           str(results), str(timeout)], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout + 30)
    assert proc.returncode == 0, proc.stderr
    text = open(results).read()
    return text.split("\n", 1)[0], text.split("\n", 1)[1], proc.stderr


def assert_replays(onnx, vnnlib, body, cwd=EXAMPLES):
    """Replay the written counterexample the organisers' way: parse it, cast, run onnxruntime."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        nets = parse_network_arg(onnx) or onnx
        inst = load_instance(vnnlib, nets)
        r = replay(inst, read_counterexample(body, inst.spec))
    finally:
        os.chdir(old)
    assert r.ok and r.margin >= 0


def test_sat_twin_with_replayed_witness(tmp_path):
    verdict, body, _ = run_instance(TWIN, SAT_V1, tmp_path / "r.txt")
    assert verdict == "sat"
    assert body.startswith("((X_0 ") and body.count("(Y_") == 5
    assert_replays(TWIN, SAT_V1, body)


def test_unsat_twin(tmp_path):
    assert run_instance(TWIN, UNSAT_V1, tmp_path / "r.txt")[0] == "unsat"


def test_two_network_v2_list_literal(tmp_path):
    verdict, body, _ = run_instance(PAIR, SAT_V2, tmp_path / "r.txt")
    assert verdict == "sat" and body.startswith("X float32 [1,1,1,5]")
    assert_replays(PAIR, SAT_V2, body)
    assert run_instance(PAIR, UNSAT_V2, tmp_path / "r2.txt")[0] == "unsat"


def test_gz_inputs(tmp_path):
    for src in (TWIN, SAT_V1):
        with open(os.path.join(EXAMPLES, src), "rb") as f, gzip.open(tmp_path / (os.path.basename(src) + ".gz"), "wb") as g:
            shutil.copyfileobj(f, g)
    verdict, body, _ = run_instance(tmp_path / (os.path.basename(TWIN) + ".gz"),
                                    tmp_path / (os.path.basename(SAT_V1) + ".gz"), tmp_path / "r.txt")
    assert verdict == "sat"


def test_missing_file(tmp_path):
    verdict, _, err = run_instance(tmp_path / "nope.onnx", SAT_V1, tmp_path / "r.txt")
    assert verdict == "error" and "nope.onnx: file not found" in err


def test_corrupt_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    verdict, _, err = run_instance(bad, SAT_V1, tmp_path / "r.txt")
    assert verdict == "error" and "bad.onnx" in err


def test_vnnlib_syntax_error(tmp_path):
    spec = tmp_path / "broken.vnnlib"
    spec.write_text(open(os.path.join(EXAMPLES, SAT_V1)).read().replace("(assert (or", "(assert (or (", 1))
    verdict, _, err = run_instance(TWIN, spec, tmp_path / "r.txt")
    assert verdict == "error" and "broken.vnnlib" in err


def test_unsupported_operator(tmp_path):
    model = M.unsupported_model(tmp_path / "u.onnx")
    spec = tmp_path / "u.vnnlib"
    from vnncomp_qeb.io.vnnlib_writer import error_bound_v1

    spec.write_text(error_bound_v1([0, 0, 0], [1, 1, 1], 0.1, [0], 3))
    verdict, _, err = run_instance(model, spec, tmp_path / "r.txt")
    assert verdict == "error" and "(Erf)" in err


def test_wrong_version_and_arguments(tmp_path):
    verdict, _, _ = run_instance(TWIN, SAT_V1, tmp_path / "r.txt", version="v2")
    assert verdict == "error"
    proc = subprocess.run([os.path.join(ROOT, "run_instance.sh"), "v1", "test", TWIN], cwd=EXAMPLES,
                          capture_output=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0
    proc = subprocess.run([sys.executable, "-m", "vnncomp_qeb", "verify", TWIN, SAT_V1, "--milp-workers", "0"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "--milp-workers" in proc.stderr and "positive integer" in proc.stderr


def test_prepare_instance():
    ok = subprocess.run([os.path.join(ROOT, "prepare_instance.sh"), "v1", "test", TWIN, SAT_V1], cwd=EXAMPLES,
                        stdin=subprocess.DEVNULL)
    assert ok.returncode == 0
    bad = subprocess.run([os.path.join(ROOT, "prepare_instance.sh"), "v0"], stdin=subprocess.DEVNULL,
                         capture_output=True)
    assert bad.returncode == 1


def _ours(results):
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "vnncomp_qeb" in cmd and str(results) in cmd:
            found.append(p)
    return found


def test_timeout_answered_in_time_without_leftovers(tmp_path):
    results = tmp_path / "r.txt"
    start = time.monotonic()
    # property 2 on net 1_1: undecided after 30 s on this machine (property 1 is now proven in 1 s)
    verdict, _, _ = run_instance(os.path.join(ACASXU, "ACASXU_run2a_1_1_batch_2000.onnx"),
                                 os.path.join(ACASXU, "prop_2.vnnlib"), results, timeout=4)
    elapsed = time.monotonic() - start
    assert verdict == "timeout"
    assert elapsed < 4.0
    assert _ours(results) == []


def test_cli_v2_network_flags(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vnncomp_qeb", "verify", SAT_V2,
                           "--network", "N=onnx/ACASXU_run2a_1_1_batch_2000_float.onnx",
                           "--network", "Q=onnx/ACASXU_run2a_1_1_batch_2000_int8_qdq.onnx",
                           "--timeout", "20", "--quiet"], cwd=EXAMPLES, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ROOT})
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[0] == "sat"
    assert lines[1] == "X float32 [1,1,1,5]" and "YQ float32 [1,5]" in lines


def test_cli_twin_and_spec_commands(tmp_path, int8_models):
    """The user path: two ONNX files and a centre become a twin and a property that verify."""
    from vnncomp_qeb.cli import main
    from vnncomp_qeb.io.vnnlib import load_spec

    twin = tmp_path / "twin.onnx"
    assert main(["twin", int8_models[("float", True)], int8_models[("QDQ", False, True)], "-o", str(twin)]) == 0
    assert main(["spec", "--center", "0.1,0.2,-0.3,0.0", "--radius", "0.05", "--eps", "0.5", "--n-outputs", "3",
                 "--outputs", "0,2", "--clip=-0.3,1", "-o", str(tmp_path / "s1.vnnlib")]) == 0
    assert main(["spec", "--center", "0.1,0.2,-0.3,0.0", "--radius", "0.05", "--eps", "0.5", "--n-outputs", "3",
                 "--vnnlib-version", "2", "-o", str(tmp_path / "s2.vnnlib")]) == 0
    (case,) = load_spec(str(tmp_path / "s1.vnnlib")).cases
    np.testing.assert_allclose(case.lower, [0.05, 0.15, -0.3, -0.05])
    np.testing.assert_allclose(case.upper, [0.15, 0.25, -0.25, 0.05])
    assert len(case.polytopes) == 4  # two outputs, two signs
    spec2 = load_spec(str(tmp_path / "s2.vnnlib"))
    assert spec2.networks == ["N", "Q"] and len(spec2.cases[0].polytopes) == 6
    inst = load_instance(str(tmp_path / "s1.vnnlib"), str(twin))
    from vnncomp_qeb.portfolio import verify

    assert verify(inst, 10.0, log=lambda m: None).verdict in ("sat", "unsat")


def _hard_mnist_instance(tmp_path):
    """P1 at Q = 4 around paper sample 2898 (index 15), ε = 1: undecided within a minute and
    784 free inputs, so the schedule reaches the MILP stage."""
    import onnx

    from vnncomp_qeb.io.fixed_point import faithful_twin, load_qebnet
    from vnncomp_qeb.io.vnnlib_writer import error_bound_v1

    net = load_qebnet(os.path.join(ROOT, "specs", "networks", "qebverif", "PTQ_mnist_1blk_100_in_8_relu_0.npz"))
    x0 = np.load(os.path.join(ROOT, "specs", "networks", "mnist_samples.npz"))["paper_images"][15].astype(float)
    twin, spec = tmp_path / "p1q4.onnx", tmp_path / "p1q4.vnnlib"
    onnx.save(faithful_twin(net, 4), str(twin))
    c = int(np.argmax(net.float_forward(x0[None])[0]))
    spec.write_text(error_bound_v1(np.clip(x0 - 3, 0, 255), np.clip(x0 + 3, 0, 255), 1.0, [c], 10))
    return twin, spec


def test_milp_stage_timeout_leaves_nothing(tmp_path):
    twin, spec = _hard_mnist_instance(tmp_path)
    results = tmp_path / "r.txt"
    start = time.monotonic()
    verdict, _, err = run_instance(twin, spec, results, timeout=8, cwd=tmp_path)
    assert time.monotonic() - start < 8.0
    assert verdict == "timeout", err
    assert "milp" in err  # the MILP child ran and was stopped at the deadline
    assert _ours(results) == []


def test_memory_cap_kills_the_solver_not_the_run(tmp_path, monkeypatch):
    twin, spec = _hard_mnist_instance(tmp_path)
    results = tmp_path / "r.txt"
    monkeypatch.setenv("QEB_VERIFY_ARGS", "--memory-mb 5")  # far below what any MILP child needs
    verdict, _, err = run_instance(twin, spec, results, timeout=20, cwd=tmp_path)
    assert verdict == "unknown", err
    assert "out_of_memory" in err
    assert _ours(results) == []
