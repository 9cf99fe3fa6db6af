"""The benchmark runner and the `supports` command, end to end on the shipped examples."""

import csv
import json
import os
import subprocess
import sys

from conftest import EXAMPLES, ROOT


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "vnncomp_qeb", *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ROOT})


def test_bench_runs_summarises_plots_and_compares(tmp_path):
    out = tmp_path / "run1"
    proc = _cli("bench", os.path.join(EXAMPLES, "instances.csv"), "--jobs", "2", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    truth = {"twin_p2_r0.001_eps0.2.vnnlib": "unsat", "pair_p2_r0.001_eps0.2.vnnlib": "unsat",
             "twin_p2_r0.001_eps0.05.vnnlib": "sat", "pair_p2_r0.001_eps0.05.vnnlib": "sat"}
    assert {os.path.basename(r["spec"]): r["verdict"] for r in rows} == truth
    assert all(r["stage"] for r in rows) and (out / "cactus.png").stat().st_size > 1000
    assert "ALL" in proc.stdout and "4" in proc.stdout.split("ALL")[1]

    previous = json.load(open(out / "results.json"))
    for p in previous:  # an earlier run that (wrongly) said the opposite on one instance
        if os.path.basename(p["spec"]) == "twin_p2_r0.001_eps0.05.vnnlib":
            p["verdict"] = "unsat"
    (tmp_path / "old.json").write_text(json.dumps(previous))
    proc = _cli("bench", os.path.join(EXAMPLES, "instances.csv"), "--match", "twin_p2_r0.001_eps0.05",
                "--out", str(tmp_path / "run2"), "--compare", str(tmp_path / "old.json"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "1 contradictions" in proc.stdout and "CONTRADICTION twin_p2_r0.001_eps0.05.vnnlib" in proc.stdout


def test_supports_lists_what_the_loader_reads():
    from vnncomp_qeb.cli import supported_operators
    from vnncomp_qeb.io import onnx_loader  # noqa: F401
    from vnncomp_qeb.io.onnx_context import HANDLERS
    from vnncomp_qeb.io.onnx_loader import CONSTANT_ONLY

    proc = _cli("supports", "--onnx-operators")
    listed = set(proc.stdout.split())
    assert proc.returncode == 0 and {"QuantizeLinear", "DequantizeLinear", "Gemm", "Relu"} <= listed
    assert listed == set(supported_operators())
    assert listed - set(CONSTANT_ONLY) == {n.split(".")[-1] for n in HANDLERS}
    theories = _cli("supports", "--arithmetic-complexity-theories").stdout.split()
    assert theories == ["BND", "OUTC", "LIN", "POLY"]
