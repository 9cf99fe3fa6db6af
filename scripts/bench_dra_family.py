"""DRA on a benchmark family: per category, the mean output-difference width of plain interval
bounds (``base``) and of the differential analysis (``best``), and milliseconds per box, over
the distinct (model, box) pairs of an instances.csv (ε does not change the box).

    python scripts/bench_dra_family.py specs/mnist_cnn_int8/instances.csv [--modes base,best]

Run ``generate_properties.py`` first. One box per call, one process, this machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import time
from collections import defaultdict

import numpy as np

from vnncomp_qeb.analysis.dra import difference_bounds
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.ir.fuse import normalise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("instances")
    ap.add_argument("--modes", default="base,best")
    args = ap.parse_args()
    root = os.path.dirname(os.path.abspath(args.instances))
    modes = args.modes.split(",")
    seen, stats = set(), defaultdict(lambda: defaultdict(list))
    graphs: dict[str, object] = {}
    with open(args.instances) as f:
        for model, spec, _ in csv.reader(f):
            key = (model, re.sub(r"_eps[^_]*\.vnnlib$", "", spec))
            if key in seen:
                continue
            seen.add(key)
            inst = load_instance(os.path.join(root, spec), os.path.join(root, model))
            graph = graphs.setdefault(model, normalise(inst.graph))
            case = inst.cases[0]
            category = re.sub(r"_id\d+.*", "", os.path.basename(spec))
            for mode in modes:
                t0 = time.perf_counter()
                lo, hi = difference_bounds(graph, case.lower[None], case.upper[None], mode)
                stats[category][mode].append((float(np.mean(hi - lo)), 1e3 * (time.perf_counter() - t0)))
    print(f"{'category':22s} boxes " + " ".join(f"{m + ' width':>12s} {m + ' ms':>9s}" for m in modes))
    for category, by_mode in stats.items():
        cols = []
        for m in modes:
            w, t = np.array(by_mode[m]).T
            cols.append(f"{w.mean():12.4f} {np.median(t):9.1f}")
        print(f"{category:22s} {len(by_mode[modes[0]]):5d} " + " ".join(cols))


if __name__ == "__main__":
    main()
