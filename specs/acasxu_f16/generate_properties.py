"""acasxu_f16: weight-only twins, the ReluDiff / NeuroDiff benchmark.

Each of the 45 ACAS Xu networks (float32) against itself with every weight and bias rounded to
float16 (stored as float32: Q(x) computes in float32 with float16-valued parameters), on the
input regions of ACAS Xu properties 1, 3, 4 and the two halves of 6 (normalised inputs, no
snapping), all five outputs: |N(x)_i - Q(x)_i| < eps for every i, eps in {0.05, 0.01}.
The seed picks 120 of the 450 combinations, 120 s each (4 h).

    python specs/acasxu_f16/generate_properties.py SEED [--out DIR]
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from benchgen import ACAS_NETS, NETWORKS, start, qebnet  # noqa: E402

from vnncomp_qeb.io.mlp_writer import mlp_model  # noqa: E402
from vnncomp_qeb.io.twin_writer import build_twin  # noqa: E402
from vnncomp_qeb.io.vnnlib import load_spec  # noqa: E402

PROPS = {"prop1": (1, 0), "prop3": (3, 0), "prop4": (4, 0), "prop6a": (6, 0), "prop6b": (6, 1)}
EPSILONS = (0.05, 0.01)
COUNT = 120
TIMEOUT = 120


def half(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)


def main() -> None:
    rng, w = start(__doc__, __file__)
    combos = [(n, p, e) for n in ACAS_NETS for p in PROPS for e in EPSILONS]
    for k in sorted(rng.choice(len(combos), COUNT, replace=False)):
        short, prop, eps = combos[k]
        net = qebnet(ACAS_NETS[short])
        n_path = w.model(f"{short}_f32", lambda: mlp_model(net.weights, net.biases, short))
        q_path = w.model(f"{short}_f16", lambda: mlp_model([half(W) for W in net.weights],
                                                           [half(b) for b in net.biases], f"{short}_f16"))
        twin = w.model(f"{short}_f16_twin", lambda: build_twin(os.path.join(w.out, n_path), os.path.join(w.out, q_path)))
        number, half_index = PROPS[prop]
        case = load_spec(os.path.join(NETWORKS, "acasxu", f"prop_{number}.vnnlib")).cases[half_index]
        w.instance(f"{short}_{prop}_eps{eps}", twin, n_path, q_path, case.lower, case.upper, eps,
                   list(range(5)), 5, [1, 5], [1, 5], TIMEOUT)
    w.finish()


if __name__ == "__main__":
    main()
