"""The command line on user mistakes and the two-network path: clear messages, no tracebacks,
the same answers in both forms."""

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from conftest import EXAMPLES

from vnncomp_qeb.bench import Row, summary
from vnncomp_qeb.cli import main
from vnncomp_qeb.io.vnnlib import load_spec

FLOAT = os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_float.onnx")
QDQ = os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_qdq.onnx")
TWIN = os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx")
V1 = os.path.join(EXAMPLES, "vnnlib", "twin_p2_r0.001_eps0.05.vnnlib")
V2 = os.path.join(EXAMPLES, "vnnlib", "pair_p2_r0.001_eps0.2.vnnlib")


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "vnncomp_qeb", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_v1_property_with_two_networks_is_rejected():
    proc = _cli("verify", V1, "--network", f"N={FLOAT}", "--network", f"Q={QDQ}", "--timeout", "10")
    assert proc.stdout.splitlines()[0] == "error"
    assert "VNN-LIB 1.0 property reads one network" in proc.stderr


def test_bounds_and_check_take_the_pair_form(tmp_path):
    pair = _cli("bounds", V2, "--network", f"N={FLOAT}", "--network", f"Q={QDQ}", "--mode", "best")
    twin = _cli("bounds", TWIN, os.path.join(EXAMPLES, "vnnlib", "twin_p2_r0.001_eps0.2.vnnlib"), "--mode", "best")
    assert pair.returncode == 0 and twin.returncode == 0, pair.stderr
    # the pair reports N − Q (5 outputs), as the twin does, not the 10 outputs side by side
    assert "y4 [" in pair.stdout and "y5 [" not in pair.stdout
    results = tmp_path / "r.txt"
    assert _cli("verify", os.path.join(EXAMPLES, "vnnlib", "pair_p2_r0.001_eps0.05.vnnlib"), "--network",
                f"N={FLOAT}", "--network", f"Q={QDQ}", "--timeout", "20", "--results", str(results)).returncode == 0
    assert results.read_text().startswith("sat\n")
    ok = _cli("check", os.path.join(EXAMPLES, "vnnlib", "pair_p2_r0.001_eps0.05.vnnlib"), str(results),
              "--network", f"N={FLOAT}", "--network", f"Q={QDQ}")
    assert ok.returncode == 0 and ok.stdout.startswith("confirmed"), ok.stdout + ok.stderr


def test_check_on_malformed_and_out_of_box_results(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("sat\n((X_0 0.2) (X_1 oops))\n")
    proc = _cli("check", TWIN, V1, str(bad))
    assert proc.returncode == 2 and "malformed" in proc.stderr
    outside = tmp_path / "out.txt"
    spec = load_spec(V1)
    x = (spec.cases[0].lower + spec.cases[0].upper) / 2
    x[3] = spec.cases[0].upper[3] + 0.5
    outside.write_text("sat\n(" + "\n ".join(f"(X_{i} {float(v)!r})" for i, v in enumerate(x)) + ")\n")
    proc = _cli("check", TWIN, V1, str(outside))
    assert proc.returncode == 1 and "input 3" in proc.stdout and "above its upper bound" in proc.stdout


def test_spec_box_is_never_wider_than_asked(tmp_path):
    centre = np.array([5.0, 0.1, 12.3, -7.77], dtype=np.float32)
    np.save(tmp_path / "c.npy", centre)
    out = tmp_path / "s.vnnlib"
    assert main(["spec", "--center", str(tmp_path / "c.npy"), "--radius", "0.01", "--eps", "0.5",
                 "--n-outputs", "2", "-o", str(out)]) == 0
    case = load_spec(str(out)).cases[0]
    for c, lo, hi in zip(centre.astype(np.float64), case.lower, case.upper):
        assert Fraction(float(lo)) >= Fraction(float(c)) - Fraction(0.01)
        assert Fraction(float(hi)) <= Fraction(float(c)) + Fraction(0.01)
        assert hi - lo > 0.0199
    txt = tmp_path / "c.txt"
    txt.write_text("1, 2,\n3 4\n")
    assert main(["spec", "--center", str(txt), "--radius", "0.5", "--eps", "1", "--n-outputs", "1", "-o", str(out)]) == 0
    assert load_spec(str(out)).n_inputs == 4
    txt.write_text("1, two\n")
    assert main(["spec", "--center", str(txt), "--radius", "0.5", "--eps", "1", "--n-outputs", "1", "-o", str(out)]) == 2
    assert main(["spec", "--center", "1,2", "--radius", "-0.01", "--eps", "1", "--n-outputs", "1", "-o", str(out)]) == 2
    # the 2.0 declarations take the model's shapes
    assert main(["spec", "--center", "0,0,0,0,0", "--radius", "0.1", "--eps", "1", "--model", FLOAT,
                 "--vnnlib-version", "2", "-o", str(out)]) == 0
    assert "declare-input X float32 [1,1,1,5]" in out.read_text()


def test_bad_numeric_arguments_are_rejected():
    for args in (["--memory-mb", "-5"], ["--timeout", "0"], ["--timeout", "-3"]):
        proc = _cli("verify", TWIN, V1, *args)
        assert proc.returncode == 2 and ("positive" in proc.stderr), proc.stderr


def test_inspect_shows_element_types_and_pairs():
    proc = _cli("inspect", f"[('N', '{FLOAT}'), ('Q', '{QDQ}')]")
    assert proc.returncode == 0, proc.stderr
    assert ": float32 [" in proc.stdout and "twin at N-Q" in proc.stdout


@pytest.mark.parametrize("name", ["short", "a_very_long_category_name_beyond_twenty_four"])
def test_bench_summary_columns_align(name):
    rows = [Row(category=name, model="m", spec="s", timeout=5, verdict="sat", time=1.0),
            Row(category="x", model="m", spec="s", timeout=5, verdict="unsat", time=2.0)]
    lines = summary(rows).splitlines()
    assert len({ln.index(" n") if i == 0 else None for i, ln in enumerate(lines[:1])}) == 1
    ends = [len(ln) for ln in lines]
    assert len(set(ends)) == 1, lines  # every row as wide as the header
