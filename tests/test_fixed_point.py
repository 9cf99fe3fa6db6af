"""QEBVerif's fixed-point networks: the quantiser reproduces the reference integers bit for bit,
the float loader reproduces the paper's accuracies, and onnxruntime on the faithful twins equals
an independent integer re-computation of QEBVerif's semantics."""

import gzip
import os

import numpy as np
import onnxruntime as ort
import pytest
from conftest import NETWORKS, ROOT

from vnncomp_qeb.io.fixed_point import faithful_twin, fixed_point_layers, fixed_point_model, float_model, load_qebnet

NETS = os.path.join(ROOT, "specs", "networks", "qebverif")
REFERENCE = os.path.join(NETWORKS, "qebverif_reference")  # QEBVerif's own integers
MNIST = ["PTQ_mnist_1blk_100_in_8_relu_0", "PTQ_mnist_2blk_100_100_in_8_relu_0",
         "PTQ_mnist_2blk_512_512_in_8_relu_0", "PTQ_mnist_3blk_100_100_100_in_8_relu_0"]
ACAS = [f"ACASXU_run2a_{a}_{b}_batch_2000" for a in range(1, 6) for b in range(1, 10)]


@pytest.mark.parametrize("name", MNIST + ACAS)
def test_quantiser_matches_reference_integers(name):
    net = load_qebnet(os.path.join(NETS, name + ".npz"))
    ref = np.load(os.path.join(REFERENCE, name + ".npz"))
    for Q in (4, 6, 8, 10):
        for k, (W, b) in enumerate(fixed_point_layers(net, Q)):
            np.testing.assert_array_equal(W, ref[f"W{k}_q{Q}"], err_msg=f"{name} Q={Q} W{k}")
            np.testing.assert_array_equal(b, ref[f"b{k}_q{Q}"], err_msg=f"{name} Q={Q} b{k}")


def test_float_accuracies_match_paper():
    with gzip.open(os.path.join(NETWORKS, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(NETWORKS, "mnist", "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    paper = [0.9692, 0.9707, 0.9736, 0.9671]
    for name, acc in zip(MNIST, paper):
        pred = load_qebnet(os.path.join(NETS, name + ".npz")).float_forward(images).argmax(axis=1)
        assert np.mean(pred == labels) == acc, name


def integer_reference(net, Q: int, x: np.ndarray) -> np.ndarray:
    """QEBVerif's semantics in integers, from the per-layer shifts recorded in the meta data:
    acc = Σ W_int·â + b_int·2^bias_shift; hidden â = clamp(round_half_up(acc / 2^e), 0, 2^Q−1);
    output acc / 2^acc_frac."""
    layers = net.meta["per_q"][str(Q)]["layers"]
    a = x.astype(np.int64)
    for (W, b), layer in zip(fixed_point_layers(net, Q), layers):
        acc = a @ W + b * 2 ** layer["bias_shift"]
        assert np.abs(acc).max() < 2**52  # exact in float64 below
        if layer["output"]:
            return acc / 2.0 ** layer["acc_frac"]
        a = np.clip((acc + 2 ** (layer["shift_e"] - 1)) >> layer["shift_e"], 0, 2**Q - 1)


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"X": xi[None]})[0] for xi in x])


@pytest.mark.parametrize("name", MNIST + ACAS[::4])
def test_twins_equal_integer_semantics(name):
    net = load_qebnet(os.path.join(NETS, name + ".npz"))
    lo, hi = (-128, 127) if net.family == "acasxu" else (0, 255)
    rng = np.random.default_rng(0)
    x = rng.integers(lo, hi + 1, size=(1000, net.input_size)).astype(np.float32)
    x[:50] = rng.choice([lo, hi], size=(50, net.input_size))  # saturated corners
    # off-grid inputs snap to the same integers as the twin's QuantizeLinear does
    jitter = rng.uniform(-0.49, 0.49, size=x.shape).astype(np.float32)
    n_only = _run(float_model(net), x)
    np.testing.assert_allclose(n_only, net.float_forward(x), rtol=0, atol=1e-9)
    for Q in (4, 6, 8, 10):
        q_ref = integer_reference(net, Q, x)
        q_only = _run(fixed_point_model(net, Q), x)
        np.testing.assert_array_equal(q_only, q_ref)  # bit for bit
        twin = _run(faithful_twin(net, Q), np.clip(x + jitter, lo, hi))
        np.testing.assert_array_equal(twin, n_only - q_only)
