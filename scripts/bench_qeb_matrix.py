"""Complete search on QEBVerif's MNIST matrix: solved counts (proved + falsified) per network and
Q at a fixed time per instance, next to the paper's DRA+MILP+Diff counts out of 150
(30 ids × ε ∈ {1, 2, 4, 6, 8}; Gurobi, 24 threads, 3600 s per task).

    python scripts/bench_qeb_matrix.py [--rows P1-4,P2-4,...] [--ids 30] [--timeout 60] [--jobs 1]

Every instance runs as its own ``vnncomp-qeb verify`` process through the benchmark runner
(:mod:`vnncomp_qeb.bench`); results, summary and cactus plot go to ``--out``.
"""

import argparse
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchgen import MNIST_NETS, mnist_samples, qebnet  # noqa: E402

from vnncomp_qeb import bench  # noqa: E402
from vnncomp_qeb.io.fixed_point import faithful_twin  # noqa: E402
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1  # noqa: E402

PAPER = {"P1-4": 150, "P1-6": 149, "P1-8": 150, "P1-10": 150, "P2-4": 133, "P2-6": 138, "P2-8": 146,
         "P2-10": 145, "P4-4": 85, "P4-8": 135}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(PAPER))
    ap.add_argument("--ids", type=int, default=30, help="first N of the 30 paper samples")
    ap.add_argument("--eps", default="1,2,4,6,8")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=1, help="instances at once (each uses every core)")
    ap.add_argument("--out", default="bench-results/qeb_matrix")
    args = ap.parse_args()
    samples = mnist_samples()
    inst_dir = os.path.join(args.out, "instances")
    os.makedirs(inst_dir, exist_ok=True)
    rows = []
    for row in args.rows.split(","):
        pname, Q = row.split("-")
        net = qebnet(MNIST_NETS[pname])
        twin = os.path.join(inst_dir, f"{pname}_Q{Q}_twin.onnx")
        if not os.path.exists(twin):
            onnx.save(faithful_twin(net, int(Q)), twin)
        for i in range(args.ids):
            sid, x0 = int(samples["paper_ids"][i]), samples["paper_images"][i].astype(np.float64)
            target = int(np.argmax(net.float_forward(x0[None])[0]))
            lo, hi = np.clip(x0 - 3, 0, 255), np.clip(x0 + 3, 0, 255)
            for eps in (float(e) for e in args.eps.split(",")):
                spec = os.path.join(inst_dir, f"{pname}_Q{Q}_id{sid}_eps{eps:g}.vnnlib")
                with open(spec, "w") as f:
                    f.write(error_bound_v1(lo, hi, eps, [target], 10))
                rows.append(bench.Row(row, twin, spec, args.timeout))
    done = bench.run_all(rows, args.jobs, [])
    bench.write(done, args.out)
    bench.cactus({f"vnncomp-qeb, {args.timeout:g} s": done}, os.path.join(args.out, "cactus.png"))
    n_eps = len(args.eps.split(","))
    print(f"{'row':6s} {'n':>4s} {'sat':>4s} {'unsat':>5s} {'solved':>6s} {'mean s':>7s}   paper (of 150) "
          f"scaled to n")
    for row in args.rows.split(","):
        rs = [r for r in done if r.category == row]
        solved = [r for r in rs if r.verdict in bench.SOLVED]
        mean = np.mean([r.time for r in solved]) if solved else 0.0
        scaled = PAPER.get(row, 0) * len(rs) / 150
        print(f"{row:6s} {len(rs):4d} {sum(r.verdict == 'sat' for r in rs):4d} {sum(r.verdict == 'unsat' for r in rs):5d} "
              f"{len(solved):6d} {mean:7.2f}   {PAPER.get(row, '-')} ({scaled:.1f} of {args.ids * n_eps})")


if __name__ == "__main__":
    main()
