"""``max-error`` on QEBVerif's MNIST twins (or on listed instances): the certified interval of
max |N − Q| on the target class and its width, next to the DRA's bound alone — QEBVerif's own
symbolic mode (``sym``, which is all QEBVerif reports: an interval of the difference, no witness)
and ours (``best``).

    python scripts/bench_max_error.py [--nets P1,P2,P3,P4] [--qs 4,8] [--ids 5] [--timeout 60]
    python scripts/bench_max_error.py --instances specs/mnist_int8/instances.csv --pick SUBSTR,SUBSTR

Each ``max-error`` runs as its own ``vnncomp-qeb max-error … --json`` process (one at a time);
the DRA bounds are computed in this process. Every figure printed is a bound on max |N − Q|:
the DRA's is ``max(|lo|, |hi|)`` of the output's difference interval.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchgen import MNIST_NETS, mnist_samples, qebnet  # noqa: E402

from vnncomp_qeb.analysis.dra import difference_bounds  # noqa: E402
from vnncomp_qeb.io.fixed_point import faithful_twin  # noqa: E402
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1  # noqa: E402


def run_max_error(model: str, spec: str, timeout: float, workdir: str) -> dict:
    """One ``vnncomp-qeb max-error`` process; its JSON answer plus the wall time."""
    out = os.path.join(workdir, "r.json")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "vnncomp_qeb", "max-error", model, spec, "--timeout", str(timeout),
                        "--json", out, "--quiet"], capture_output=True, text=True, timeout=timeout + 120)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1], "wall": time.monotonic() - t0}
    with open(out) as f:
        r = json.load(f)
    r["wall"] = time.monotonic() - t0
    return r


def dra_bound(graph, lo: np.ndarray, hi: np.ndarray, outs: list[int], mode: str) -> float:
    """The DRA's bound of max |N − Q| over the box and the outputs ``outs``."""
    blo, bhi = difference_bounds(graph, lo[None], hi[None], mode)
    return float(max(max(-blo[0, i], bhi[0, i]) for i in outs))


def row(label: str, r: dict, sym: float | None, best: float | None) -> str:
    dra = f"{sym:9.4f} {best:9.4f}" if sym is not None else f"{'-':>9s} {'-':>9s}"
    if "error" in r:
        return f"{label:28s} {dra}   error: {r['error']}"
    lo, hi = r["lower"], r["upper"]
    return (f"{label:28s} {dra}   [{lo:.4f}, {hi:.4f}]  {hi - lo:8.4f}  {r['time']:6.1f}  "
            f"{'closed' if hi <= lo else ''}")


def qeb_twins(args, tmp: str) -> None:
    from vnncomp_qeb.analysis.exact import annotate_exact
    from vnncomp_qeb.io.onnx_loader import model_to_graph
    from vnncomp_qeb.ir.fuse import normalise

    samples = mnist_samples()
    print(f"{'task':28s} {'DRA sym':>9s} {'DRA best':>9s}   max-error [lower, upper]   width   time s", flush=True)
    widths = []
    for pname in args.nets.split(","):
        net = qebnet(MNIST_NETS[pname])
        for Q in (int(q) for q in args.qs.split(",")):
            twin = os.path.join(tmp, f"{pname}_Q{Q}.onnx")
            onnx.save(faithful_twin(net, Q), twin)
            graph = normalise(model_to_graph(onnx.load(twin)))
            graph = annotate_exact(graph, None, np.zeros(graph.input_size), np.full(graph.input_size, 255.0))
            for i in range(args.ids):
                sid, x0 = int(samples["paper_ids"][i]), samples["paper_images"][i].astype(np.float64)
                c = int(np.argmax(net.float_forward(x0[None])[0]))
                lo, hi = np.clip(x0 - 3, 0, 255), np.clip(x0 + 3, 0, 255)
                spec = os.path.join(tmp, "spec.vnnlib")
                with open(spec, "w") as f:
                    f.write(error_bound_v1(lo, hi, 1.0, [c], 10))
                sym, best = (dra_bound(graph, lo, hi, [c], m) for m in ("sym", "best"))
                r = run_max_error(twin, spec, args.timeout, tmp)
                if "error" not in r:
                    widths.append((pname, Q, r["upper"] - r["lower"], best, sym))
                print(row(f"{pname}-{Q} id{sid} c{c}", r, sym, best), flush=True)
    if widths:
        w = np.array([x[2:] for x in widths])
        print(f"\nmean width: max-error {w[:, 0].mean():.4f}; DRA bound alone: best {w[:, 1].mean():.4f}, "
              f"sym (QEBVerif's) {w[:, 2].mean():.4f} (a DRA bound is a width from the lower bound 0)")


def listed(args, tmp: str) -> None:
    base = os.path.dirname(os.path.abspath(args.instances))
    picks = args.pick.split(",") if args.pick else [""]
    print(f"{'instance':40s} {'DRA sym':>9s} {'DRA best':>9s}   max-error [lower, upper]   width   time s", flush=True)
    with open(args.instances) as f:
        for onnx_path, spec, _ in csv.reader(f):
            if not any(p in spec or p in onnx_path for p in picks):
                continue
            r = run_max_error(os.path.join(base, onnx_path), os.path.join(base, spec), args.timeout, tmp)
            print(row(os.path.basename(spec)[:40], r, None, None), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="P1,P2,P3,P4")
    ap.add_argument("--qs", default="4,8")
    ap.add_argument("--ids", type=int, default=5, help="first N of the 30 paper samples")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--instances", help="an instances.csv instead of the QEBVerif twins")
    ap.add_argument("--pick", help="with --instances: comma-separated substrings of the ONNX or VNN-LIB path")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qeb-bench-max-error-") as tmp:
        (listed if args.instances else qeb_twins)(args, tmp)


if __name__ == "__main__":
    main()
