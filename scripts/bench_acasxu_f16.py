"""The NeuroDiff comparison: weight-only float16 twins of ACAS Xu nets 1_1 and 2_1 on the regions
of properties 1, 3, 4, 6a and 6b, all five outputs, ε = 0.05 (NeuroDiff proves each in
0.02–20 s, one thread). Prints our verdict and time per instance.

    python scripts/bench_acasxu_f16.py [--nets N1_1,N2_1] [--eps 0.05] [--timeout 40] [--jobs 1]
"""

import argparse
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchgen import ACAS_NETS, NETWORKS, qebnet  # noqa: E402

from vnncomp_qeb import bench  # noqa: E402
from vnncomp_qeb.io.mlp_writer import mlp_model  # noqa: E402
from vnncomp_qeb.io.twin_writer import build_twin  # noqa: E402
from vnncomp_qeb.io.vnnlib import load_spec  # noqa: E402
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1  # noqa: E402

PROPS = {"prop1": (1, 0), "prop3": (3, 0), "prop4": (4, 0), "prop6a": (6, 0), "prop6b": (6, 1)}


def half(v):
    return np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="N1_1,N2_1")
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=40.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="bench-results/acasxu_f16")
    args = ap.parse_args()
    d = os.path.join(args.out, "instances")
    os.makedirs(d, exist_ok=True)
    rows = []
    for short in args.nets.split(","):
        net = qebnet(ACAS_NETS[short])
        n_path, q_path, twin = (os.path.join(d, f"{short}_{k}.onnx") for k in ("f32", "f16", "f16_twin"))
        onnx.save(mlp_model(net.weights, net.biases, short), n_path)
        onnx.save(mlp_model([half(W) for W in net.weights], [half(b) for b in net.biases], f"{short}_f16"), q_path)
        onnx.save(build_twin(n_path, q_path), twin)
        for prop, (number, k) in PROPS.items():
            case = load_spec(os.path.join(NETWORKS, "acasxu", f"prop_{number}.vnnlib")).cases[k]
            spec = os.path.join(d, f"{short}_{prop}_eps{args.eps:g}.vnnlib")
            with open(spec, "w") as f:
                f.write(error_bound_v1(case.lower, case.upper, args.eps, list(range(5)), 5))
            rows.append(bench.Row(f"{short}_{prop}", twin, spec, args.timeout))
    done = bench.run_all(rows, args.jobs, [])
    bench.write(done, args.out)
    print(f"{'instance':14s} {'verdict':>8s} {'time s':>7s}  stage")
    for r in done:
        print(f"{r.category:14s} {r.verdict:>8s} {r.time:7.2f}  {r.stage} {r.message}")


if __name__ == "__main__":
    main()
