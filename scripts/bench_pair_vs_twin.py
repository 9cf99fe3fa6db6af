"""The same error-bound questions in both forms — one difference model (VNN-LIB 1.0) and two
networks (VNN-LIB 2.0) — with verdict and time each: the shipped int8 ACAS Xu examples, and
float16 conversions (onnxconverter-common, with and without float32 I/O) of a digits-sized MLP.

    python scripts/bench_pair_vs_twin.py [--timeout 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnx

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from vnncomp_qeb.io.instance import load_instance  # noqa: E402
from vnncomp_qeb.io.twin_writer import build_twin  # noqa: E402
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1, error_bound_v2  # noqa: E402
from vnncomp_qeb.portfolio import verify  # noqa: E402
from models import gemm_mlp  # noqa: E402  (tests/models.py: the test suite's model builders)

EX = os.path.join(ROOT, "specs", "examples")


def _run(spec: str, nets, timeout: float) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = verify(load_instance(spec, nets), timeout, log=lambda m: None)
    return out.verdict, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    rows = []
    for eps in ("0.05", "0.2"):
        twin = _run(os.path.join(EX, "vnnlib", f"twin_p2_r0.001_eps{eps}.vnnlib"),
                    os.path.join(EX, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx"), args.timeout)
        pair = _run(os.path.join(EX, "vnnlib", f"pair_p2_r0.001_eps{eps}.vnnlib"),
                    {"N": os.path.join(EX, "onnx", "ACASXU_run2a_1_1_batch_2000_float.onnx"),
                     "Q": os.path.join(EX, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_qdq.onnx")}, args.timeout)
        rows.append((f"ACAS Xu int8 QDQ, eps {eps}", twin, pair))

    from onnxconverter_common import float16

    d = tempfile.mkdtemp(prefix="pair-twin-")
    n_path = os.path.join(d, "n.onnx")
    model = gemm_mlp(n_path, (64, 32, 16, 10))
    centre = np.random.default_rng(1).integers(0, 17, 64).astype(np.float64)
    lo, hi = centre - 0.01, centre + 0.01
    for io32 in (False, True):
        q_path = os.path.join(d, f"q{int(io32)}.onnx")
        onnx.save(float16.convert_float_to_float16(model, keep_io_types=io32), q_path)
        t_path = os.path.join(d, f"t{int(io32)}.onnx")
        onnx.save(build_twin(n_path, q_path), t_path)
        for eps in (0.01, 0.03, 0.1, 0.5):
            s1, s2 = os.path.join(d, "s1.vnnlib"), os.path.join(d, "s2.vnnlib")
            with open(s1, "w") as f:
                f.write(error_bound_v1(lo, hi, eps, list(range(10)), 10))
            with open(s2, "w") as f:
                f.write(error_bound_v2(lo, hi, eps, list(range(10)), [1, 64], [1, 10]))
            rows.append((f"MLP 64-32-16-10 float16 ({'float32' if io32 else 'float16'} I/O), eps {eps}",
                         _run(s1, t_path, args.timeout), _run(s2, {"N": n_path, "Q": q_path}, args.timeout)))
    print(f"{'instance':52s} {'twin':>16s} {'pair':>16s}")
    for name, (v1, t1), (v2, t2) in rows:
        print(f"{name:52s} {v1:>8s} {t1:6.2f} s {v2:>8s} {t2:6.2f} s")


if __name__ == "__main__":
    main()
