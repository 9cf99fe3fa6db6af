"""Witness search on snapped inputs: the iterated local search (search/moves.py) against the MILP
neighbourhood search (milp/neighbourhood.py), same starts, same time, several seeds.

    python scripts/bench_local_search.py MODEL SPEC [MODEL SPEC ...] [--seconds 30] [--seeds 4]

For each instance and seed: the best 16 of 4,096 box samples are the starts; each search runs
alone on one core for ``--seconds`` and stops at its first point with margin ≥ 0 (the reference
evaluator's; the verifier replays such a point in onnxruntime). Prints the time to that point (or
the best margin reached) per search and seed.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core each, as the MILP children run

import numpy as np  # noqa: E402

from vnncomp_qeb.analysis.dra import refined_bounds  # noqa: E402
from vnncomp_qeb.io.instance import load_instance  # noqa: E402
from vnncomp_qeb.milp.backends import backend_chain  # noqa: E402
from vnncomp_qeb.milp.encode import WITNESS, encode  # noqa: E402
from vnncomp_qeb.milp.neighbourhood import neighbourhood_search  # noqa: E402
from vnncomp_qeb.milp.solve import _with_objective  # noqa: E402
from vnncomp_qeb.search.domains import CodeDomain, domain_for  # noqa: E402
from vnncomp_qeb.search.moves import iterated_search  # noqa: E402
from vnncomp_qeb.search.sampling import box_points  # noqa: E402


def run(model: str, spec: str, seconds: float, seed: int) -> tuple[str, str]:
    inst = load_instance(spec, model)
    case = inst.cases[0]
    dom = domain_for(inst.graph)
    L, U = dom.initial(case)
    integer = isinstance(dom, CodeDomain)
    rng = np.random.default_rng(seed)
    pts = box_points(case.lower, case.upper, 4096, rng)
    pts = pts[np.argsort(-case.margin(inst.graph.evaluate(pts)))[:16]]
    starts = dom.from_input(pts)
    g = dom.analysis_graph
    out = []
    # the local search
    t0 = time.monotonic()
    x, m, found = iterated_search(g, case.margin, starts, L[0], U[0], integer, t0 + seconds,
                                  np.random.default_rng(seed))
    out.append(f"{time.monotonic() - t0:6.1f} s" if found else f"  {m:+.3f}")
    # the MILP neighbourhoods on every polytope (the witness model built first, not timed)
    bounds, _ = refined_bounds(g, L.astype(float), U.astype(float))
    enc = encode(g, bounds, WITNESS, integer)
    y_lo = np.concatenate([bounds[o][0].reshape(-1) for o in g.outputs])
    y_hi = np.concatenate([bounds[o][1].reshape(-1) for o in g.outputs])
    targets = [(_with_objective(enc, p, y_lo, y_hi)[0], p) for p in case.polytopes]
    best = [-np.inf]

    def check(points):
        best[0] = max(best[0], float(case.margin(g.evaluate(points))[0]))
        return True if best[0] >= 0 else None

    t0 = time.monotonic()
    lines: list[str] = []
    found = neighbourhood_search(enc, targets, starts, integer_input=integer, deadline=t0 + seconds,
                                 chain=backend_chain(), check=check, rng=np.random.default_rng(seed),
                                 log=lines.append)
    tail = lines[-1].rsplit("best margins ", 1)[-1] if lines else "?"
    out.append(f"{time.monotonic() - t0:6.1f} s" if found else f"  best {tail}")
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", help="MODEL SPEC pairs")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give MODEL SPEC pairs")
    print(f"{'instance':34s} seed  local search     MILP neighbourhoods  (time to a witness, or best margin)")
    for model, spec in zip(args.pairs[::2], args.pairs[1::2]):
        for seed in range(args.seeds):
            a, b = run(model, spec, args.seconds, seed)
            print(f"{os.path.basename(spec)[:34]:34s} {seed:4d}  {a:15s}  {b}", flush=True)


if __name__ == "__main__":
    main()
