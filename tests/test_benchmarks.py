"""Every benchmark's generate_properties.py: different seeds give different instance sets,
timeouts sum to at most 6 h, every listed file exists and parses, and the models fit the
properties."""

import ast
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import vnnlib
from conftest import ROOT

from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.ir.twin import find_twins

FAMILIES = ["qeb_mnist", "qeb_acasxu", "acasxu_f16", "mnist_int8", "mnist_cnn_int8"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = {}
    for fam in FAMILIES:
        for seed in (0, 1):
            d = tmp_path_factory.mktemp(f"{fam}_{seed}")
            subprocess.run([sys.executable, os.path.join(ROOT, "specs", fam, "generate_properties.py"), str(seed),
                            "--out", str(d)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
            out[(fam, seed)] = d
    return out


def _rows(folder, name):
    with open(os.path.join(folder, name)) as f:
        return [r for r in csv.reader(f) if r]


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_benchmark(generated, family):
    folder = generated[(family, 0)]
    v1, v2 = _rows(folder, "instances.csv"), _rows(folder, "instances_v2.csv")
    assert len(v1) == len(v2) > 0
    other = _rows(generated[(family, 1)], "instances.csv")
    assert {r[1] for r in v1} != {r[1] for r in other}, "different seeds, different instances"
    for rows in (v1, v2):
        assert sum(float(r[2]) for r in rows) <= 6 * 3600
    for onnx_col, spec, _ in v1:
        assert os.path.isfile(os.path.join(folder, onnx_col)) and os.path.isfile(os.path.join(folder, spec))
    for nets, spec, _ in v2:
        assert all(os.path.isfile(os.path.join(folder, p)) for _, p in ast.literal_eval(nets))
        assert os.path.isfile(os.path.join(folder, spec))

    rng = np.random.default_rng(0)
    old = os.getcwd()
    os.chdir(folder)
    try:
        for k in rng.choice(len(v1), 3, replace=False):
            inst = load_instance(v1[k][1], v1[k][0])  # sizes of model and property agree
            assert len(find_twins(load_onnx(v1[k][0]))) == 1
            assert inst.spec.cases
            nets, spec = ast.literal_eval(v2[k][0]), v2[k][1]
            vnnlib.parse_query_file(spec)  # the reference 2.0 parser accepts it
            inst2 = load_instance(spec, dict(nets))
            # the same property in both forms: equal boxes, and the twin = N − Q
            np.testing.assert_array_equal(inst2.spec.cases[0].lower, inst.spec.cases[0].lower)
            x = rng.uniform(inst.spec.cases[0].lower, inst.spec.cases[0].upper, size=(5, inst.spec.n_inputs))
            # the pair is analysed as its twin: the graph computes N − Q itself
            assert inst2.graph.outputs == ["N-Q"]
            np.testing.assert_allclose(inst.graph.evaluate(x), inst2.graph.evaluate(x), atol=1e-9)
    finally:
        os.chdir(old)
