"""Float16 models as users make them (onnxconverter-common's convert_float_to_float16, with and
without float32 I/O): the twin onnxruntime runs is the pair's N − Q, no onnxruntime output
escapes any bound, and verdicts are right in both forms (twin file and two networks).

The reproduction of a wrong ``unsat``: bounds used to follow float32 arithmetic with
float16-valued weights, missing the rounding of Q's float16 input and output (up to 2^-8 on
inputs of 8..16), and the twin written for such a pair did not load in onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxconverter_common import float16

import models as M
from vnncomp_qeb.analysis.dra import MODES, difference_bounds
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.results import SAT, UNSAT
from vnncomp_qeb.io.twin_writer import build_twin
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1, error_bound_v2
from vnncomp_qeb.ir.fuse import normalise
from vnncomp_qeb.portfolio import verify

SIZES = (16, 12, 8, 4)
RADIUS = 0.01


def _float_model(path, seed=0):
    """A ReLU MLP of Gemm layers over digit-like inputs (0..16), as sklearn's would export."""
    return M.gemm_mlp(path, SIZES, seed, weight_scale=0.25)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp16")
    model = _float_model(d / "n.onnx")
    out = {"dir": d, "N": str(d / "n.onnx"), "center": np.random.default_rng(1).integers(0, 17, SIZES[0]) * 1.0}
    for io32 in (False, True):
        q = d / f"q_io32_{io32}.onnx"
        onnx.save(float16.convert_float_to_float16(model, keep_io_types=io32), str(q))
        out[io32] = str(q)
        onnx.save(build_twin(out["N"], str(q)), str(d / f"t_io32_{io32}.onnx"))
    return out


def _run(path, x):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    return s.run(None, {i.name: x.astype(np.float16 if i.type == "tensor(float16)" else np.float32)})[0].astype(np.float64)


def _samples(center, n, rng):
    lo, hi = center - RADIUS, center + RADIUS
    x = rng.uniform(lo, hi, (n, center.size))
    x[: n // 4] = np.where(rng.random((n // 4, center.size)) < 0.5, lo, hi)  # corners
    return x.astype(np.float32)


@pytest.mark.parametrize("io32", [False, True], ids=["float16-io", "float32-io"])
def test_twin_loads_and_is_the_pairs_difference(pair, io32):
    twin = str(pair["dir"] / f"t_io32_{io32}.onnx")
    x = _samples(pair["center"], 500, np.random.default_rng(0))
    pair_diff = _run(pair["N"], x).astype(np.float32) - _run(pair[io32], x).astype(np.float32)
    assert np.array_equal(_run(twin, x), pair_diff.astype(np.float64))


@pytest.mark.parametrize("form", ["twin", "pair"])
@pytest.mark.parametrize("io32", [False, True], ids=["float16-io", "float32-io"])
def test_no_onnxruntime_output_escapes_the_bounds(pair, io32, form):
    d, c = pair["dir"], pair["center"]
    lo, hi = c - RADIUS, c + RADIUS
    if form == "twin":
        spec = d / "b1.vnnlib"
        spec.write_text(error_bound_v1(lo, hi, 1.0, list(range(SIZES[-1])), SIZES[-1]))
        inst = load_instance(str(spec), str(d / f"t_io32_{io32}.onnx"))
    else:
        spec = d / "b2.vnnlib"
        spec.write_text(error_bound_v2(lo, hi, 1.0, list(range(SIZES[-1])), [1, SIZES[0]], [1, SIZES[-1]]))
        inst = load_instance(str(spec), {"N": pair["N"], "Q": pair[io32]})
        assert inst.graph.outputs == ["N-Q"] and len(inst.cases[0].polytopes[0].b) == 1  # the pair became a twin
    x = _samples(c, 4000, np.random.default_rng(2))
    y = _run(pair["N"], x) - _run(pair[io32], x)
    graph = normalise(inst.graph)
    case = inst.cases[0]
    for mode in MODES:
        blo, bhi = difference_bounds(graph, case.lower[None], case.upper[None], mode)
        assert np.all(y >= blo) and np.all(y <= bhi), (mode, (blo - y).max(), (y - bhi).max())


def _spec(pair, eps, form, name):
    d, c = pair["dir"], pair["center"]
    path = d / f"{name}.vnnlib"
    if form == "twin":
        path.write_text(error_bound_v1(c - RADIUS, c + RADIUS, eps, list(range(SIZES[-1])), SIZES[-1]))
    else:
        path.write_text(error_bound_v2(c - RADIUS, c + RADIUS, eps, list(range(SIZES[-1])), [1, SIZES[0]],
                                       [1, SIZES[-1]]))
    return str(path)


@pytest.mark.parametrize("form", ["twin", "pair"])
def test_float16_io_violation_is_not_proven_away(pair, form):
    """ε below a sampled violation of the two original files: never ``unsat`` (it was), and the
    violation is found and replayed."""
    x = _samples(pair["center"], 20000, np.random.default_rng(3))
    top = float(np.abs(_run(pair["N"], x) - _run(pair[False], x)).max())
    spec = _spec(pair, 0.8 * top, form, f"viol_{form}")
    nets = str(pair["dir"] / "t_io32_False.onnx") if form == "twin" else {"N": pair["N"], "Q": pair[False]}
    inst = load_instance(spec, nets)
    out = verify(inst, timeout=20.0, log=lambda m: None)
    assert out.verdict != UNSAT
    assert out.verdict == SAT
    r = replay(inst, np.asarray(out.replay.x, dtype=np.float64))
    assert r.ok


@pytest.mark.parametrize("form", ["twin", "pair"])
@pytest.mark.parametrize("io32", [False, True], ids=["float16-io", "float32-io"])
def test_float16_bound_is_proven_in_both_forms(pair, io32, form):
    """ε well above every sampled difference (but below the loose bounds of subtracting separate
    analyses): ``unsat`` in both forms, within seconds."""
    x = _samples(pair["center"], 4000, np.random.default_rng(4))
    top = float(np.abs(_run(pair["N"], x) - _run(pair[io32], x)).max())
    spec = _spec(pair, max(8 * top, 0.05), form, f"safe_{form}_{io32}")
    nets = str(pair["dir"] / f"t_io32_{io32}.onnx") if form == "twin" else {"N": pair["N"], "Q": pair[io32]}
    out = verify(load_instance(spec, nets), timeout=20.0, log=lambda m: None)
    assert out.verdict == UNSAT, out
