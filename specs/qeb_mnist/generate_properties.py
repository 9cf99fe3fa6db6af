"""qeb_mnist: QEBVerif's MNIST error-bound experiments, faithfully (docs/design.md §2.5).

Networks P1-P4 at Q in {4, 6, 8, 10} fixed-point bits against their float originals, L-inf
boxes of radius 3 pixels (clipped to 0..255) around the 30 paper samples, property
|N(x)_c - Q(x)_c| < eps for the float net's predicted class c, eps in {1, 2, 4, 6, 8}. The seed
picks 3 of the 30 samples for each (network, Q): 16 x 3 x 5 = 240 instances, 60 s each (4 h).

    python specs/qeb_mnist/generate_properties.py SEED [--out DIR]
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from benchgen import mnist_networks, mnist_samples, start  # noqa: E402

from vnncomp_qeb.io.fixed_point import faithful_twin, fixed_point_model, float_model  # noqa: E402

QS = (4, 6, 8, 10)
EPSILONS = (1, 2, 4, 6, 8)
RADIUS = 3
PER_NET_Q = 3
TIMEOUT = 60


def main() -> None:
    rng, w = start(__doc__, __file__)
    samples = mnist_samples()
    for pname, net in mnist_networks():
        n_path = w.model(f"{pname}_float", lambda: float_model(net))
        for Q in QS:
            twin = w.model(f"{pname}_Q{Q}_twin", lambda: faithful_twin(net, Q))
            q_path = w.model(f"{pname}_Q{Q}", lambda: fixed_point_model(net, Q))
            for i in sorted(rng.choice(len(samples["paper_ids"]), PER_NET_Q, replace=False)):
                sid, x0 = int(samples["paper_ids"][i]), samples["paper_images"][i].astype(np.float64)
                target = int(np.argmax(net.float_forward(x0[None])[0]))
                lo, hi = np.clip(x0 - RADIUS, 0, 255), np.clip(x0 + RADIUS, 0, 255)
                for eps in EPSILONS:
                    w.instance(f"{pname}_Q{Q}_id{sid}_eps{eps}", twin, n_path, q_path, lo, hi, eps, [target],
                               10, [1, 784], [1, 10], TIMEOUT)
    w.finish()


if __name__ == "__main__":
    main()
