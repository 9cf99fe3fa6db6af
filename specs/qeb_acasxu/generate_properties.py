"""qeb_acasxu: QEBVerif's ACAS Xu error-bound experiments on the 45 networks (docs/design.md §2.5).

Each network at Q in {4, 6, 8, 10} fixed-point bits against its float original, on
  - the fix points p1..p5 with radii {0.01, 0.025, 0.05} (centre code round(p*256), radius
    round(r*255) codes: 3, 6, 13), and
  - the input regions of prop_1 .. prop_10 (prop_6 as halves 6a and 6b), in integer units
    (x256), rounded by the twin's input snap,
with |N(x)_c - Q(x)_c| < eps, eps in {0.05, 0.1, 0.2, 0.3, 0.4}, c the target class (0 for
fix points and props 1-4, 6, 10; 4 for props 5, 7; 1 for prop 8; 3 for prop 9). The seed picks
48 (network, region, Q) triples, each with all five eps: 240 instances, 60 s each (4 h).

    python specs/qeb_acasxu/generate_properties.py SEED [--out DIR]
"""

import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from benchgen import ACAS_NETS, NETWORKS, start, qebnet  # noqa: E402

from vnncomp_qeb.io.fixed_point import faithful_twin, fixed_point_model, float_model  # noqa: E402
from vnncomp_qeb.io.vnnlib import load_spec  # noqa: E402

FIX_POINTS = {"p1": [0, 0, 0, 0, 0], "p2": [0.2, -0.1, 0, -0.3, 0.4], "p3": [0.45, -0.23, -0.4, 0.12, 0.33],
              "p4": [-0.2, -0.25, -0.5, -0.3, -0.44], "p5": [0.61, 0.36, 0, 0, -0.24]}
RADII = (0.01, 0.025, 0.05)
TARGET = {1: 0, 2: 0, 3: 0, 4: 0, 5: 4, 6: 0, 7: 4, 8: 1, 9: 3, 10: 0}
QS = (4, 6, 8, 10)
EPSILONS = (0.05, 0.1, 0.2, 0.3, 0.4)
TRIPLES = 48
TIMEOUT = 60


def regions() -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """name → (lower, upper, target class), in integer input units."""
    out = {}
    for (p, centre), r in itertools.product(FIX_POINTS.items(), RADII):
        c0, R = np.round(np.array(centre) * 256), round(r * 255)
        out[f"{p}_r{r}"] = (np.clip(c0 - R, -128, 127), np.clip(c0 + R, -128, 127), 0)
    for i in range(1, 11):
        cases = load_spec(os.path.join(NETWORKS, "acasxu", f"prop_{i}.vnnlib")).cases
        for suffix, case in zip(("a", "b") if len(cases) > 1 else ("",), cases):
            out[f"prop{i}{suffix}"] = (case.lower * 256, case.upper * 256, TARGET[i])
    return out


def main() -> None:
    rng, w = start(__doc__, __file__)
    regs = regions()
    nets = list(ACAS_NETS)
    combos = list(itertools.product(range(len(nets)), sorted(regs), QS))
    for k in sorted(rng.choice(len(combos), TRIPLES, replace=False)):
        ni, region, Q = combos[k]
        short = nets[ni]
        net = qebnet(ACAS_NETS[short])
        twin = w.model(f"{short}_Q{Q}_twin", lambda: faithful_twin(net, Q))
        n_path = w.model(f"{short}_float", lambda: float_model(net))
        q_path = w.model(f"{short}_Q{Q}", lambda: fixed_point_model(net, Q))
        lo, hi, target = regs[region]
        for eps in EPSILONS:
            w.instance(f"{short}_Q{Q}_{region}_eps{eps}", twin, n_path, q_path, lo, hi, eps, [target],
                       5, [1, 5], [1, 5], TIMEOUT)
    w.finish()


if __name__ == "__main__":
    main()
