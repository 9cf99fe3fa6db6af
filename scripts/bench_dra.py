"""DRA benchmark on QEBVerif's MNIST matrix: mean output-difference width (target class) and
median time per task, per network, Q and mode, next to QEBVerif's published numbers.

Tasks: P1-P4 x Q in {4, 6, 8, 10} x the 30 paper samples, L-inf radius 3 pixels, the faithful
twins of specs/qeb_mnist. One box per task (no batching), one process, this machine.

    python scripts/bench_dra.py [--nets P1,P2,P3,P4] [--qs 4,6,8,10] [--ids 30] [--modes base,con,sym,joint,diff,best]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchgen import MNIST_NETS, mnist_samples, qebnet  # noqa: E402

from vnncomp_qeb.analysis.dra import difference_bounds  # noqa: E402
from vnncomp_qeb.io.fixed_point import faithful_twin  # noqa: E402
from vnncomp_qeb.io.onnx_loader import model_to_graph  # noqa: E402
from vnncomp_qeb.analysis.exact import annotate_exact  # noqa: E402
from vnncomp_qeb.ir.fuse import normalise  # noqa: E402

# QEBVerif (CAV 2023, RQ1): mean width Base / Con / Sym, and time per task where published
QEBVERIF = {("P1", 4): (7.021, 6.940, 3.141, 1.3), ("P1", 6): (7.894, 2.192, 1.455, None),
            ("P1", 8): (7.954, 0.891, 1.021, None), ("P1", 10): (7.958, 0.560, 0.923, None),
            ("P2", 4): (20.27, 33.44, 7.105, 2.9), ("P2", 6): (24.25, 14.74, 3.113, None),
            ("P2", 8): (24.58, 6.539, 2.145, None), ("P2", 10): (24.63, 4.283, 1.913, None),
            ("P3", 4): (22.69, 98.56, 11.11, 23.7), ("P3", 6): (31.67, 34.62, 3.989, None),
            ("P3", 8): (32.43, 13.85, 2.385, None), ("P3", 10): (32.40, 7.032, 2.006, None),
            ("P4", 4): (47.75, 56.86, 14.90, 5.1), ("P4", 6): (54.66, 57.50, 5.334, None),
            ("P4", 8): (55.42, 43.26, 3.481, None), ("P4", 10): (55.55, 35.08, 3.056, None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="P1,P2,P3,P4")
    ap.add_argument("--qs", default="4,6,8,10")
    ap.add_argument("--ids", type=int, default=30)
    ap.add_argument("--modes", default="base,con,sym,joint,best")
    ap.add_argument("--no-exact", action="store_true", help="ignore the exactness analysis (widened ties everywhere)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    samples = mnist_samples()
    print(f"{'net':4s} {'Q':>2s} " + " ".join(f"{m + ' width':>11s} {m + ' ms':>9s}" for m in modes)
          + "   QEBVerif Base/Con/Sym (best), s/task", flush=True)
    for pname in args.nets.split(","):
        net = qebnet(MNIST_NETS[pname])
        for Q in (int(q) for q in args.qs.split(",")):
            graph = normalise(model_to_graph(faithful_twin(net, Q)))
            if not args.no_exact:  # pixels are snapped to integers: mark the exactly computed roundings
                graph = annotate_exact(graph, None, np.zeros(graph.input_size), np.full(graph.input_size, 255.0))
            widths = {m: [] for m in modes}
            times = {m: [] for m in modes}
            for i in range(args.ids):
                x0 = samples["paper_images"][i].astype(np.float64)
                c = int(np.argmax(net.float_forward(x0[None])[0]))
                lo, hi = np.clip(x0 - 3, 0, 255)[None], np.clip(x0 + 3, 0, 255)[None]
                for m in modes:
                    t0 = time.perf_counter()
                    blo, bhi = difference_bounds(graph, lo, hi, m)
                    times[m].append(time.perf_counter() - t0)
                    widths[m].append(bhi[0, c] - blo[0, c])
            ref = QEBVERIF[(pname, Q)]
            cells = " ".join(f"{np.mean(widths[m]):11.3f} {np.median(times[m]) * 1000:9.1f}" for m in modes)
            t_ref = f"{ref[3]} s" if ref[3] else "-"
            print(f"{pname:4s} {Q:2d} {cells}   {ref[0]}/{ref[1]}/{ref[2]} ({min(ref[:3])}), {t_ref}", flush=True)


if __name__ == "__main__":
    main()
