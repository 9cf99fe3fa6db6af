"""How often does the exact reference evaluator differ from onnxruntime on int8 models?

docs/design.md §2.3: onnxruntime fuses QDQ into integer kernels with a float32 requantization
multiplier, so an exact evaluation differs from it by one step on rare inputs near rounding
ties. This script measures that on real quantize_static output (QDQ / QOperator, per-tensor /
per-channel) of the QEBVerif MNIST network P2 (784-100-100-10) and of the shipped ACAS Xu int8
model, over 10,000 random inputs and the 10,000 MNIST test images, and prints per model:
the share of inputs with any output differing, the share of output elements differing, the
largest difference in output steps, and evaluator vs onnxruntime batch throughput.

    python scripts/bench_evaluator.py [--data specs/networks] [--n 10000]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from vnncomp_qeb.io.fixed_point import load_qebnet  # noqa: E402
from vnncomp_qeb.io.mlp_writer import mlp_model  # noqa: E402
from vnncomp_qeb.io.onnx_loader import load_onnx  # noqa: E402
from vnncomp_qeb.ir import ops  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def mnist_images(shared: str) -> np.ndarray:
    with gzip.open(os.path.join(shared, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        data = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    return data.reshape(-1, 784).astype(np.float32) / 255.0


def float_mnist(npz_path: str, out: str) -> str:
    """The QEBVerif float network as an ONNX MLP with a dynamic batch axis."""
    net = load_qebnet(npz_path)
    onnx.save(mlp_model(net.weights, net.biases, net.name, batch="N"), out)
    return out


class _Calib(CalibrationDataReader):
    def __init__(self, images: np.ndarray):
        self.it = iter([{"X": im[None]} for im in images])

    def get_next(self):
        return next(self.it, None)


def compare(path: str, inputs: dict[str, np.ndarray], input_shape) -> list[str]:
    g = load_onnx(path)
    lsb = float(np.max([op for op in g.ops if isinstance(op, ops.FakeQuant)][-1].scale))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rows = []
    for label, x in inputs.items():
        t0 = time.perf_counter()
        if input_shape is None:
            ref = sess.run(None, {name: x})[0].astype(np.float64).reshape(len(x), -1)
        else:  # fixed batch-1 model
            ref = np.stack([sess.run(None, {name: xi.reshape(input_shape)})[0].ravel() for xi in x]).astype(np.float64)
        t_ort = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = g.evaluate(x)
        t_ref = time.perf_counter() - t0
        steps = np.abs(ours - ref) / lsb
        differ = steps > 0.5
        rows.append(f"{os.path.basename(path):42s} {label:7s} {len(x):6d} {differ.any(axis=1).mean() * 100:8.3f}% "
                    f"{differ.mean() * 100:8.4f}% {steps.max():6.2f} {t_ort / t_ref:8.2f}x")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", dest="shared", default=os.path.join(ROOT, "specs", "networks"), help="folder holding mnist/ (the MNIST test set)")
    ap.add_argument("--n", type=int, default=10000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = mnist_images(args.shared)
    tmp = tempfile.mkdtemp()
    f = float_mnist(os.path.join(ROOT, "specs", "networks", "qebverif", "PTQ_mnist_2blk_100_100_in_8_relu_0.npz"),
                    os.path.join(tmp, "P2_float.onnx"))
    print("model                                      inputs       n  inputs≠   outputs≠  max steps  ORT/ref time")
    mnist_inputs = {"random": rng.random((args.n, 784)).astype(np.float32), "mnist": images[: args.n]}
    for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
        for pc in (False, True):
            q = os.path.join(tmp, f"P2_int8_{fmt.name}_{'perchannel' if pc else 'pertensor'}.onnx")
            # calibrated on test images 9000.. (never the centres used by the benchmarks)
            quantize_static(f, q, _Calib(images[9000:9200]), quant_format=fmt, per_channel=pc,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            for row in compare(q, mnist_inputs, None):
                print(row, flush=True)
    acas = os.path.join(ROOT, "specs", "examples", "onnx", "ACASXU_run2a_1_1_batch_2000_int8_qdq.onnx")
    acas_in = {"random": rng.uniform(-0.5, 0.5, size=(args.n, 5)).astype(np.float32)}
    for row in compare(acas, acas_in, (1, 1, 1, 5)):
        print(row)


if __name__ == "__main__":
    main()
