"""Avenue measurement (issue 20): LP-based bound tightening (OBBT) of the hidden pre-activations
before the proof model, on a hard QEBVerif task.

For every paired hidden tensor of the twin (``z`` of N, ``ẑ`` of Q: the inputs of a ReLU and of
a rounding step; the first layer's intervals are attained already, its difference still gets a
row), layer by layer, the LP relaxation of the proof model over the task's box is minimised and
maximised for each ``z_j``, ``ẑ_j`` and ``z_j − ẑ_j``; the new intervals replace the DRA's (and
every interval downstream is re-propagated), the differences enter as extra rows. Then both
sides of the task are solved with HiGHS as the verifier solves them (cutoff just below 0, one
core), without and with the tightening.

    python scripts/bench_obbt.py [--task P2-6:3236:1] [--timeout 60]

The LP values are floating point with a 1e-7 margin, not certified: this measures whether the
avenue is worth a sound implementation, it decides nothing.

Measured (session 14, 60 s per side; "slack ≤" is the proof's bound at the limit, < 0 proves):
P2-6 id3236 ε = 1: z widths 1.44 → 0.82, ẑ 1.50 → 1.12, OBBT 17.5 s on that layer;
slack ≤ 0.567 / 0.125 → 0.541 / 0.105. P2-4 id5656 ε = 4: z 1.78 → 0.95, ẑ 2.52 → 2.24,
OBBT 23.6 s; N − Q side 1.31 → 1.00 (the other side proven in < 1 s either way). No verdict in
reach. Not kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_code_split import task_instance  # noqa: E402

from vnncomp_qeb.analysis.backsub import exact_by_intervals  # noqa: E402
from vnncomp_qeb.analysis.dra import cached_difference_graph, refined_bounds  # noqa: E402
from vnncomp_qeb.analysis.interval import propagate_op  # noqa: E402
from vnncomp_qeb.milp.backends import HighsBackend, highs_model  # noqa: E402
from vnncomp_qeb.milp.encode import PROOF, Cut, encode  # noqa: E402
from vnncomp_qeb.milp.solve import _with_objective, difference_cuts  # noqa: E402
from vnncomp_qeb.search.domains import domain_for  # noqa: E402

MARGIN = 1e-7


def _minimum(h, cols: list[int], coefs: list[float]) -> float:
    """min Σ coefs·x[cols] over the LP (the objective is reset afterwards)."""
    idx = np.asarray(cols, dtype=np.int32)
    h.changeColsCost(idx.size, idx, np.asarray(coefs, dtype=np.float64))
    h.run()
    value = h.getInfo().objective_function_value
    h.changeColsCost(idx.size, idx, np.zeros(idx.size))
    return value


def tighten(g, bounds, relaxations, pair: tuple[str, str], extra: list[Cut]) -> list[Cut]:
    """OBBT on one paired tensor: narrows ``bounds`` in place (and downstream); returns the
    difference rows for ``z − ẑ``."""
    enc = encode(g, bounds, PROOF, False, difference_cuts(g, bounds, relaxations) + extra)
    h = highs_model(enc.model, np.zeros(enc.model.n_vars), minimise=True, integer=False)
    h.setOptionValue("threads", 1)
    zc, qc = (enc.columns[t].ravel() for t in pair)
    for name, cols in zip(pair, (zc, qc)):
        lo, hi = (v.reshape(-1).copy() for v in bounds[name])
        width = float(np.mean(hi - lo))
        for j, c in enumerate(cols):
            lo[j] = max(lo[j], _minimum(h, [c], [1.0]) - MARGIN)
            hi[j] = min(hi[j], -_minimum(h, [c], [-1.0]) + MARGIN)
        print(f"  {name}: mean width {width:.3f} -> {float(np.mean(hi - lo)):.3f}")
        shape = bounds[name][0].shape
        bounds[name] = (lo.reshape(shape), hi.reshape(shape))
    d_lo = np.array([_minimum(h, [a, b], [1.0, -1.0]) - MARGIN for a, b in zip(zc, qc)])
    d_hi = np.array([-_minimum(h, [a, b], [-1.0, 1.0]) + MARGIN for a, b in zip(zc, qc)])
    print(f"  {pair[0]} − {pair[1]}: mean width {float(np.mean(d_hi - d_lo)):.3f}")
    after = False
    for op in g.ops:  # every interval downstream of the pair, re-propagated and intersected
        if op.output in pair:
            after = True
        elif after:
            lo, hi = propagate_op(op, [bounds[t] for t in op.inputs])
            old_lo, old_hi = bounds[op.output]
            bounds[op.output] = (np.maximum(lo, old_lo), np.minimum(hi, old_hi))
    return [Cut(pair, (1.0, -1.0), d_lo, d_hi)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="P2-6:3236:1")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        inst = task_instance(args.task, d)
    case = inst.cases[0]
    domain = domain_for(inst.graph)
    L0, U0 = domain.initial(case)
    g = domain.analysis_graph
    exact = exact_by_intervals(g)
    pairs = [(op.z, op.zq) for op in cached_difference_graph(g).graph.ops
             if op.kind == "DiffActivation" and not {op.z, op.zq} <= exact]
    for obbt in (False, True):
        bounds, relaxations = refined_bounds(g, L0.astype(np.float64), U0.astype(np.float64))
        extra: list[Cut] = []
        t0 = time.monotonic()
        if obbt:
            for pair in pairs:
                extra += tighten(g, bounds, relaxations, pair, extra)
            print(f"OBBT {time.monotonic() - t0:.1f}s")
        enc = encode(g, bounds, PROOF, False, difference_cuts(g, bounds, relaxations) + extra)
        y_lo = np.concatenate([bounds[o][0].reshape(-1) for o in g.outputs])
        y_hi = np.concatenate([bounds[o][1].reshape(-1) for o in g.outputs])
        for side, p in enumerate(case.polytopes):
            model, _, tol = _with_objective(enc, p, y_lo, y_hi)
            r = HighsBackend().solve(model, args.timeout, cutoff=-2 * tol)
            print(f"{'OBBT' if obbt else 'base'} side {side}: slack ≤ {r.bound:.4g} ({r.status}, "
                  f"{r.seconds:.1f}s, {enc.n_binaries} binaries)", flush=True)


if __name__ == "__main__":
    main()
