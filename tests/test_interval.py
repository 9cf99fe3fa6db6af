"""Interval bounds are sound: no sampled input — onnxruntime's float32 output or the exact
reference — escapes them, on float, int8 and twin models."""

import os

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ACASXU, EXAMPLES

from vnncomp_qeb.analysis.interval import output_bounds
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.io.replay import run_onnx


def _check(path, centre, radius, n=2000, seed=0, feed=None):
    g = load_onnx(path)
    rng = np.random.default_rng(seed)
    lo, hi = centre - radius, centre + radius
    x = rng.uniform(lo, hi, size=(n, lo.size))
    x[: n // 10] = np.where(rng.random((n // 10, lo.size)) < 0.5, lo, hi)  # corners
    x = np.clip(x.astype(np.float32), lo, hi).astype(np.float32)
    x = x[np.all((x >= lo) & (x <= hi), axis=1)]
    blo, bhi = output_bounds(g, lo[None], hi[None])
    ref = g.evaluate(x)
    ours = feed(path, x) if feed else np.array([run_onnx(path, xi) for xi in x])
    for y in (ref, ours):
        assert np.all(y >= blo) and np.all(y <= bhi), (path, (blo - y).max(), (y - bhi).max())


def _batched(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float64)


@pytest.mark.parametrize("key", [("float", True), ("QDQ", False, True), ("QDQ", True, False),
                                 ("QOperator", False, False), ("QOperator", True, True)])
@pytest.mark.parametrize("radius", [0.01, 0.3])
def test_int8_models(int8_models, key, radius):
    for seed in range(3):
        centre = np.random.default_rng(seed).uniform(-0.5, 0.5, size=4)
        _check(int8_models[key], centre, radius, seed=seed, feed=_batched)


def test_acasxu_float():
    _check(os.path.join(ACASXU, "ACASXU_run2a_1_1_batch_2000.onnx"), np.zeros(5), 0.02, n=300)


@pytest.mark.parametrize("radius", [0.001, 0.004])
def test_shipped_int8_twin(radius):
    path = os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx")
    _check(path, np.array([0.2, -0.1, 0.0, -0.3, 0.4]), radius, n=300)


@pytest.mark.parametrize("activation", ["QInt16", "QUInt16"])
def test_16bit_models_computed_in_float32(int8_models, model_dir, activation):
    """16-bit QDQ runs in float32 in onnxruntime: the bounds must cover its accumulation error."""
    import models as M

    path = M.quantize(int8_models[("float", True)], model_dir / f"i_{activation}.onnx",
                      activation=activation, weight="QInt8" if activation == "QInt16" else "QUInt8")
    for seed in range(3):
        centre = np.random.default_rng(seed).uniform(-0.5, 0.5, size=4)
        _check(path, centre, 0.05, n=5000, seed=seed, feed=_batched)
