"""Build the small example instances shipped in specs/examples (README quick start, tests).

ACAS Xu network 1_1 (float) is quantized to int8 by onnxruntime's quantize_static (QDQ,
per-tensor, calibrated on random points of the normalised input domain), then written as
  - a difference model N(X) - Q(X) with VNN-LIB 1.0 error-bound properties, and
  - the two separate networks with VNN-LIB 2.0 queries tying their inputs.

    python scripts/make_examples.py [--acasxu specs/networks/acasxu] [--out specs/examples]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from vnncomp_qeb.io.twin_writer import build_twin, strip_initializer_inputs
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1, error_bound_v2

NET = "ACASXU_run2a_1_1_batch_2000"
# (name, centre (normalised ACAS Xu input), radius, eps): chosen so that the shipped first
# verifier decides each one within seconds (see tests/test_harness.py for the verdicts).
PROPERTIES = [
    ("p2_r0.001_eps0.2", [0.2, -0.1, 0.0, -0.3, 0.4], 0.001, 0.2),  # unsat: |N - Q| <= 0.104
    ("p2_r0.001_eps0.05", [0.2, -0.1, 0.0, -0.3, 0.4], 0.001, 0.05),  # sat
]


class _RandomInputs(CalibrationDataReader):
    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.data = iter([{"input": rng.uniform(-0.5, 0.5, size=(1, 1, 1, 5)).astype(np.float32)}
                          for _ in range(n)])

    def get_next(self):
        return next(self.data, None)


def float_model(src: str, dst: str) -> None:
    """The float network at opset 13 without initializers listed as inputs."""
    m = onnx.load(src)
    strip_initializer_inputs(m)
    m = version_converter.convert_version(m, 13)
    m.ir_version = 8
    onnx.save(m, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--acasxu", default=os.path.join(os.path.dirname(__file__), "..", "specs", "networks", "acasxu"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "specs", "examples"))
    args = ap.parse_args()
    onnx_dir, spec_dir = os.path.join(args.out, "onnx"), os.path.join(args.out, "vnnlib")
    os.makedirs(onnx_dir, exist_ok=True)
    os.makedirs(spec_dir, exist_ok=True)

    f_path = os.path.join(onnx_dir, f"{NET}_float.onnx")
    q_path = os.path.join(onnx_dir, f"{NET}_int8_qdq.onnx")
    t_path = os.path.join(onnx_dir, f"{NET}_int8_twin.onnx")
    float_model(os.path.join(args.acasxu, f"{NET}.onnx"), f_path)
    quantize_static(f_path, q_path, _RandomInputs(256, seed=0), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=False)
    onnx.save(build_twin(f_path, q_path), t_path)

    rows = []
    for name, centre, radius, eps in PROPERTIES:
        lo, hi = np.array(centre) - radius, np.array(centre) + radius
        v1 = os.path.join(spec_dir, f"twin_{name}.vnnlib")
        with open(v1, "w") as f:
            f.write(error_bound_v1(lo, hi, eps, list(range(5)), 5))
        v2 = os.path.join(spec_dir, f"pair_{name}.vnnlib")
        with open(v2, "w") as f:
            f.write(error_bound_v2(lo, hi, eps, list(range(5)), [1, 1, 1, 5], [1, 5]))
        rows.append(f"onnx/{os.path.basename(t_path)},vnnlib/{os.path.basename(v1)},30")
        pair = f"[('N', 'onnx/{os.path.basename(f_path)}'), ('Q', 'onnx/{os.path.basename(q_path)}')]"
        rows.append(f"\"{pair}\",vnnlib/{os.path.basename(v2)},30")
    with open(os.path.join(args.out, "instances.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"wrote {len(rows)} instances to {args.out}")


if __name__ == "__main__":
    main()
