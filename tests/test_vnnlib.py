"""VNN-LIB 1.0 and 2.0 readers: the ACAS Xu properties as the files state them, and bad files
rejected with the line named."""

import gzip
import os

import numpy as np
import pytest
import vnnlib
from conftest import ACASXU

from vnncomp_qeb.errors import SpecError
from vnncomp_qeb.io.vnnlib import load_spec, parse_spec
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1, error_bound_v2

# The unsafe output sets, written from the properties' own comments ("unsafe if ...").
UNSAFE = {
    1: lambda y: y[0] >= 3.991125645861615,
    2: lambda y: all(y[0] >= y[j] for j in range(1, 5)),
    3: lambda y: all(y[0] <= y[j] for j in range(1, 5)),
    4: lambda y: all(y[0] <= y[j] for j in range(1, 5)),
    5: lambda y: any(y[j] <= y[4] for j in range(4)),
    6: lambda y: any(y[j] <= y[0] for j in range(1, 5)),
    7: lambda y: any(all(y[k] <= y[j] for j in range(3)) for k in (3, 4)),
    8: lambda y: any(all(y[k] <= y[j] for j in range(2)) for k in (2, 3, 4)),
    9: lambda y: any(y[j] <= y[3] for j in (0, 1, 2, 4)),
    10: lambda y: any(y[j] <= y[0] for j in range(1, 5)),
}


def _boxes_from_text(path):
    """Independent reading of the single-box files: one (assert (<=|>= X_i v)) per line."""
    lo, hi = np.full(5, np.nan), np.full(5, np.nan)
    for line in open(path):
        parts = line.replace("(", " ").replace(")", " ").split()
        if len(parts) == 4 and parts[0] == "assert" and parts[2].startswith("X_"):
            i = int(parts[2][2:])
            (hi if parts[1] == "<=" else lo)[i] = float(parts[3])
    return lo, hi


@pytest.mark.parametrize("prop", range(1, 11))
def test_acasxu_properties(prop):
    spec = load_spec(os.path.join(ACASXU, f"prop_{prop}.vnnlib"))
    assert (spec.n_inputs, spec.n_outputs, spec.version) == (5, 5, "1.0")
    if prop == 6:
        assert len(spec.cases) == 2
        assert spec.cases[0].lower[1] == 0.11140846 and spec.cases[0].upper[1] == 0.499999896
        assert spec.cases[1].lower[1] == -0.499999896 and spec.cases[1].upper[1] == -0.11140846
    else:
        (case,) = spec.cases
        lo, hi = _boxes_from_text(os.path.join(ACASXU, f"prop_{prop}.vnnlib"))
        np.testing.assert_array_equal(case.lower, lo)
        np.testing.assert_array_equal(case.upper, hi)
    ys = np.random.default_rng(prop).normal(size=(3000, 5)) * 2 + 2
    ys[:10, 0] = 3.991125645861615  # boundary of property 1
    ys[10:20, 1:] = ys[10:20, :1]  # ties between outputs
    for case in spec.cases:
        got = case.unsafe(ys)
        want = np.array([UNSAFE[prop](y) for y in ys])
        np.testing.assert_array_equal(got, want)


def test_plain_assert_and_or_are_conjoined():
    """An `or` after a plain output assert is and-ed with it (a classic parser bug)."""
    text = """(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
    (assert (>= X_0 0)) (assert (<= X_0 1))
    (assert (<= Y_0 1.0))
    (assert (or (and (>= Y_1 2)) (and (>= Y_1 -2) (<= Y_0 -5))))"""
    (case,) = parse_spec(text).cases
    ys = np.array([[0.0, 3.0], [2.0, 3.0], [-6.0, 0.0], [-4.0, 0.0]])
    np.testing.assert_array_equal(case.unsafe(ys), [True, False, True, False])


def test_linear_terms_exponents_comments_and_strictness():
    text = """; comment (with parentheses)
    (declare-const X_0 Real) (declare-const X_1 Real) ; trailing comment
    (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (<= X_0 1e-1)) (assert (>= X_0 -1E-1)) (assert (<= (* 2 X_1) 3)) (assert (>= X_1 0))
    (assert (>= (- Y_0 Y_1) (* 0.5 (+ Y_1 1))))
    (assert (< Y_0 10))"""
    (case,) = parse_spec(text).cases
    np.testing.assert_array_equal(case.lower, [-0.1, 0.0])
    np.testing.assert_array_equal(case.upper, [0.1, 1.5])
    # y0 - y1 >= 0.5 y1 + 0.5  and  y0 < 10
    ys = np.array([[2.0, 1.0], [1.9, 1.0], [10.0, 1.0], [9.99, 1.0]])
    np.testing.assert_array_equal(case.unsafe(ys), [True, False, False, True])


def test_gz_spec(tmp_path):
    text = "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))(assert (>= Y_0 1))"
    p = tmp_path / "s.vnnlib.gz"
    with gzip.open(p, "wt") as f:
        f.write(text)
    assert len(load_spec(str(p)).cases) == 1


@pytest.mark.parametrize("text, message, line", [
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= Y_0 1))",
     "X_0 has no lower bound", None),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_1 0))",
     "'X_1' is used but not declared", 4),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n(assert (>= X_0 0))",
     "unbalanced", 3),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<== X_0 1))", "unknown operator '<=='", 3),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (>= (* Y_0 Y_0) 1))", "not linear", 5),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (>= Y_0 X_0))", "mixes input and output", 5),
])
def test_bad_v1_files_name_the_line(text, message, line):
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(text, "bad.vnnlib")
    assert err.value.line == line
    assert "bad.vnnlib" in str(err.value)


def test_missing_file():
    with pytest.raises(SpecError, match="file not found"):
        load_spec("/nonexistent/prop.vnnlib")


def test_written_v2_parses_with_reference_parser_and_ours():
    lo, hi = np.array([0.0, -0.25, 1e-7]), np.array([0.5, 0.25, 1.0])
    text = error_bound_v2(lo, hi, 0.05, [0, 2], [1, 3], [1, 3])
    vnnlib.parse_query_string(text)  # the reference (2026 scorer) parser accepts it
    spec = parse_spec(text)
    assert (spec.version, spec.n_inputs, spec.n_outputs, spec.networks) == ("2.0", 3, 6, ["N", "Q"])
    (case,) = spec.cases
    np.testing.assert_array_equal(case.lower, lo)
    np.testing.assert_array_equal(case.upper, hi)
    y = np.zeros((4, 6))
    y[0, 0] = 0.05  # Y0 - YQ0 = 0.05: unsafe
    y[1, 2], y[1, 5] = 0.0, 0.049  # Y2 - YQ2 = -0.049: safe
    y[2, 5] = 0.05  # Y2 - YQ2 = -0.05: unsafe
    y[3, 1] = 1.0  # output 1 is not bounded
    np.testing.assert_array_equal(case.unsafe(y), [True, False, True, False])
    assert [v.name for v in spec.variables] == ["X", "Y", "XQ", "YQ"]
    np.testing.assert_array_equal(spec.variables[2].index, [0, 1, 2])  # XQ tied to X


def test_written_v1_matches_v2():
    lo, hi = np.array([0.0, 0.1]), np.array([0.5, 0.2])
    v1 = parse_spec(error_bound_v1(lo, hi, 0.1, [0, 1], 2))
    ys = np.random.default_rng(0).uniform(-0.2, 0.2, size=(500, 2))
    want = (np.abs(ys) >= 0.1).any(axis=1)
    np.testing.assert_array_equal(v1.cases[0].unsafe(ys), want)


def test_bad_v2_file_names_line():
    text = "(vnnlib-version <2.0>)\n(declare-network N\n (declare-input X float32 [1,2])\n" \
           " (declare-output Y float32 [1,2]))\n(assert (<= X[0,0] 1.0))\n(assert (>= Z[0,0] 1.0))\n"
    with pytest.raises(SpecError, match="Undeclared variable 'Z'") as err:
        parse_spec(text, "q.vnnlib")
    assert err.value.line == 6


def test_v2_unbounded_input_rejected():
    text = "(vnnlib-version <2.0>)\n(declare-network N\n (declare-input X float32 [1,2])\n" \
           " (declare-output Y float32 [1,2]))\n(assert (and (<= X[0,0] 1.0) (>= X[0,0] 0.0) (<= X[0,1] 1.0)))\n" \
           "(assert (>= Y[0,0] 1.0))\n"
    with pytest.raises(SpecError, match=r"X\[0,1\] has no lower bound"):
        parse_spec(text)


def test_oversized_properties_are_refused_before_parsing(tmp_path):
    """A disjunction of 2.1 M comparisons without (and …) blocks is refused by a count before any
    parsing, with the reason (parsing it first took tens of seconds and gigabytes)."""
    from vnncomp_qeb.errors import SpecError
    from vnncomp_qeb.io.vnnlib import load_spec

    path = tmp_path / "huge.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (or "
                    + " ".join(f"(<= X_0 {k})" for k in range(2_100_000)) + "))\n")
    with pytest.raises(SpecError, match="comparisons"):
        load_spec(str(path))
