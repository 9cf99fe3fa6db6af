"""Verdicts against ground truth from exhaustive grid enumeration: ε 0.1 % above and below the
true maximum of |N − Q| over the snapped grid, on every quantize_static form. Never a wrong
answer, every `sat` replayed by onnxruntime."""

import itertools

import numpy as np
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
