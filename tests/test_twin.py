"""Twin detection on difference models: both operand orders, extra outputs, every int8 form."""

import os

import pytest
from conftest import EXAMPLES

import models as M
from vnncomp_qeb.io.onnx_loader import load_onnx
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.twin import find_twins


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("extra", [False, True])
def test_twin_found_and_paired(int8_models, model_dir, fmt, swap, extra):
    f, q = int8_models[("float", True)], int8_models[(fmt, False, True)]
    path = M.snapped_twin(f, q, model_dir / f"twin_{fmt}_{swap}_{extra}.onnx", 0.25, swap=swap, extra_output=extra)
    g = load_onnx(path)
    (twin,) = find_twins(g)
    assert twin.sign == (-1 if swap else 1)
    assert len(twin.pairs) == 3
    assert [a.W.shape for a, _ in twin.pairs] == [(4, 8), (8, 8), (8, 3)]
    assert all(isinstance(op, ops.FakeQuant) for op in twin.shared_ops if not isinstance(op, ops.Gather))
    assert len(twin.shared_ops) == 1  # the input snap feeds both branches
    assert twin.float_output.startswith("N_") and twin.quant_output.startswith("Q_")
    assert not any(isinstance(op, (ops.FakeQuant, ops.Round)) for op in twin.float_ops)


def test_float_network_has_no_twin(int8_models):
    assert find_twins(load_onnx(int8_models[("float", True)])) == []


def test_shipped_example_twin():
    g = load_onnx(os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx"))
    (twin,) = find_twins(g)
    assert len(twin.pairs) == 7 and twin.sign == 1


def test_inspect_command_prints_ir_and_pairing(capsys):
    from vnncomp_qeb.cli import main

    assert main(["inspect", os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx")]) == 0
    out = capsys.readouterr().out
    assert "graph " in out and "FakeQuant" in out
    assert "twin at Y = N − Q" in out and "layer 6: N N_linear_7_Add 50->5" in out
