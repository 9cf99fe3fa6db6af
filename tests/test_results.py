"""Counterexample files in both formats, read back as the organisers would; float32 inputs that
stay inside float64 boxes."""

import numpy as np
import pytest

from vnncomp_qeb.io.replay import snap_into_box
from vnncomp_qeb.io.results import counterexample, read_counterexample, write_result
from vnncomp_qeb.io.vnnlib import parse_spec
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1, error_bound_v2


def test_v1_format_and_round_trip(tmp_path):
    spec = parse_spec(error_bound_v1([0, 0], [1, 1], 0.1, [0], 3))
    x = np.array([0.1, 0.7], dtype=np.float32)
    y = np.array([1.5, -2.0, 1e-9])
    text = counterexample(spec, x, y)
    assert text.splitlines()[0] == f"((X_0 {float(x[0])!r})"
    assert text.splitlines()[-1] == " (Y_2 1e-09))"
    assert len(text.splitlines()) == 5
    path = tmp_path / "out.txt"
    write_result(str(path), "sat", text)
    verdict, body = path.read_text().split("\n", 1)
    assert verdict == "sat"
    back = read_counterexample(body, spec)
    np.testing.assert_array_equal(back.astype(np.float32), x)  # exact float32 round trip


def test_v2_format_and_round_trip():
    spec = parse_spec(error_bound_v2([0, 0], [1, 1], 0.1, [0], [1, 2], [1, 2]))
    x = np.array([0.25, 0.5], dtype=np.float32)
    y = np.array([1.0, 2.0, 3.0, 4.0])
    lines = counterexample(spec, x, y).splitlines()
    assert lines == ["X float32 [1,2]", "0.25", "0.5", "Y float32 [1,2]", "1.0", "2.0",
                     "XQ float32 [1,2]", "0.25", "0.5", "YQ float32 [1,2]", "3.0", "4.0"]
    np.testing.assert_array_equal(read_counterexample("\n".join(lines), spec), x)


def test_write_result_verdict_only(tmp_path):
    path = tmp_path / "deep" / "r.txt"
    write_result(str(path), "unsat")
    assert path.read_text() == "unsat\n"
    with pytest.raises(AssertionError):
        write_result(str(path), "maybe")


def _no_float32_in(lo: float, hi: float) -> bool:
    first = np.float32(lo)
    if float(first) < lo:
        first = np.nextafter(first, np.float32(np.inf))
    return float(first) > hi


def test_snap_into_box_float32():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lo = rng.normal(size=4)
        hi = lo + np.abs(rng.normal(size=4)) * 10.0 ** rng.integers(-9, 1, size=4)
        x = rng.uniform(lo, hi)
        xs = snap_into_box(x, lo, hi)
        if xs is None:  # only when some coordinate's interval holds no float32 value at all
            assert any(_no_float32_in(lv, hv) for lv, hv in zip(lo, hi))
            continue
        assert xs.dtype == np.float32
        assert np.all(xs.astype(np.float64) >= lo) and np.all(xs.astype(np.float64) <= hi)


def test_snap_into_box_without_float32_point():
    lo = np.array([0.1])  # no float32 lies in [0.1, 0.1] (0.1 is not a float32)
    assert snap_into_box(np.array([0.1]), lo, lo) is None
