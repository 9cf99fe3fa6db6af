"""mnist_int8: the real-user path. The float MNIST networks P1-P4 quantized to int8 by
onnxruntime.quantization.quantize_static in four forms (QDQ / QOperator, per-tensor /
per-channel weights), calibrated on 200 MNIST test images that are never centres.

Regions: L-inf boxes of radius 1 or 2 pixels (/255, clipped to [0, 1]) around the 30 paper
samples (input x/255). Property on all ten logits: |N(x)_i - Q(x)_i| < eps, eps in
{0.25, 0.5, 1, 2} (measured |N - Q| near test images: about 0.2-0.4). The seed picks 3
(sample, radius) pairs per model: 16 x 3 x 4 = 192 instances, 60 s each (3.2 h).

    python specs/mnist_int8/generate_properties.py SEED [--out DIR]
"""

import os
import sys
import tempfile

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from benchgen import mnist_networks, mnist_samples, start  # noqa: E402

from vnncomp_qeb.io.mlp_writer import mlp_model  # noqa: E402
from vnncomp_qeb.io.twin_writer import build_twin  # noqa: E402

FORMS = {"qdq_pt": (QuantFormat.QDQ, False), "qdq_pc": (QuantFormat.QDQ, True),
         "qop_pt": (QuantFormat.QOperator, False), "qop_pc": (QuantFormat.QOperator, True)}
RADII = (1, 2)
EPSILONS = (0.25, 0.5, 1, 2)
PER_MODEL = 3
TIMEOUT = 60


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray):
        self.it = iter([{"X": (im / 255.0).astype(np.float32)[None]} for im in images])

    def get_next(self):
        return next(self.it, None)


def quantized(float_path: str, form: str, calib: np.ndarray) -> str:
    fmt, per_channel = FORMS[form]
    out = os.path.join(tempfile.mkdtemp(), "q.onnx")
    quantize_static(float_path, out, _Calibration(calib), quant_format=fmt, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def main() -> None:
    rng, w = start(__doc__, __file__)
    samples = mnist_samples()
    for pname, net in mnist_networks():
        n_path = w.model(f"{pname}_float", lambda: mlp_model(net.weights, net.biases, pname))
        for form in FORMS:
            q_path = w.model(f"{pname}_int8_{form}",
                             lambda: quantized(os.path.join(w.out, n_path), form, samples["calib_images"]))
            twin = w.model(f"{pname}_int8_{form}_twin",
                           lambda: build_twin(os.path.join(w.out, n_path), os.path.join(w.out, q_path)))
            pairs = [(i, r) for i in range(len(samples["paper_ids"])) for r in RADII]
            for k in sorted(rng.choice(len(pairs), PER_MODEL, replace=False)):
                i, r = pairs[k]
                x0 = samples["paper_images"][i].astype(np.float64) / 255.0
                lo, hi = np.clip(x0 - r / 255.0, 0, 1), np.clip(x0 + r / 255.0, 0, 1)
                for eps in EPSILONS:
                    w.instance(f"{pname}_int8_{form}_id{samples['paper_ids'][i]}_r{r}_eps{eps}", twin, n_path,
                               q_path, lo, hi, eps, list(range(10)), 10, [1, 784], [1, 10], TIMEOUT)
    w.finish()


if __name__ == "__main__":
    main()
