"""mnist_cnn_int8: convolutional networks as users quantize them. Two small MNIST CNNs trained
with PyTorch and exported by torch.onnx (specs/networks/mnist_cnn, scripts/train_mnist_cnn.py):
cnn_a (Conv-Relu-Conv-Relu-Flatten-Gemm) and cnn_b (Conv-BatchNorm-Relu-MaxPool-Conv-Relu-Flatten-
Gemm), each quantized to int8 by onnxruntime.quantization.quantize_static as QDQ and QOperator
with per-channel weights, calibrated on 200 MNIST test images never used as centres, by
quantize_dynamic (ConvInteger/MatMulInteger, activation scales computed at run time), and by
PyTorch's torch.ao.quantization (FX, x86 qconfig) exported with torch.onnx (shipped,
scripts/quantize_mnist_cnn_torch.py).

Regions: L-inf boxes of radius 1 or 2 pixels (/255, clipped to [0, 1]) around the paper's 30
samples. Property on all ten logits: |N(x)_i - Q(x)_i| < eps, eps in {0.25, 0.5, 1}. The seed picks
3 (sample, radius) pairs per model: 8 x 3 x 3 = 72 instances, 60 s each (72 min).

    python specs/mnist_cnn_int8/generate_properties.py SEED [--out DIR]
"""

import os
import sys
import tempfile

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
from benchgen import NETWORKS, mnist_samples, start  # noqa: E402

from vnncomp_qeb.io.twin_writer import build_twin  # noqa: E402

NETS = ("cnn_a", "cnn_b")
FORMS = {"qdq_pc": QuantFormat.QDQ, "qop_pc": QuantFormat.QOperator, "dyn_pc": "dynamic", "torch_pc": "torch"}
LATER = ("dyn_pc", "torch_pc")  # drawn after the first two forms: their instances stay those recorded
RADII = (1, 2)
EPSILONS = (0.25, 0.5, 1)
PER_MODEL = 3
TIMEOUT = 60


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray):
        self.it = iter([{"x": (im / 255.0).astype(np.float32).reshape(1, 1, 28, 28)} for im in images])

    def get_next(self):
        return next(self.it, None)


def quantized(float_path: str, form: str, calib: np.ndarray) -> str:
    out = os.path.join(tempfile.mkdtemp(), "q.onnx")
    if FORMS[form] == "dynamic":  # weights int8 per channel, activations at run time
        quantize_dynamic(float_path, out, per_channel=True, weight_type=QuantType.QInt8)
        return out
    if FORMS[form] == "torch":  # shipped: PyTorch is not needed to generate
        return float_path.replace(".onnx", "_torch_int8.onnx")
    quantize_static(float_path, out, _Calibration(calib), quant_format=FORMS[form], per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def main() -> None:
    rng, w = start(__doc__, __file__)
    samples = mnist_samples()
    # forms added later are drawn after the first ones, so those keep the recorded instances
    for name, form in [(n, f) for n in NETS for f in FORMS if f not in LATER] + [(n, f) for f in LATER for n in NETS]:
        src = os.path.join(NETWORKS, "mnist_cnn", f"{name}.onnx")
        n_path = w.model(f"{name}_float", lambda: src)
        q_path = w.model(f"{name}_int8_{form}", lambda: quantized(src, form, samples["calib_images"]))
        twin = w.model(f"{name}_int8_{form}_twin",
                       lambda: build_twin(os.path.join(w.out, n_path), os.path.join(w.out, q_path)))
        pairs = [(i, r) for i in range(len(samples["paper_ids"])) for r in RADII]
        for k in sorted(rng.choice(len(pairs), PER_MODEL, replace=False)):
            i, r = pairs[k]
            x0 = samples["paper_images"][i].astype(np.float64).reshape(-1) / 255.0
            lo, hi = np.clip(x0 - r / 255.0, 0, 1), np.clip(x0 + r / 255.0, 0, 1)
            for eps in EPSILONS:
                w.instance(f"{name}_int8_{form}_id{samples['paper_ids'][i]}_r{r}_eps{eps}", twin, n_path,
                           q_path, lo, hi, eps, list(range(10)), 10, [1, 1, 28, 28], [1, 10], TIMEOUT)
    w.finish()


if __name__ == "__main__":
    main()
