"""Avenue measurement (issue 20): CP-SAT (OR-Tools) on the hard QEBVerif rows, against the
verifier's HiGHS-based search on the same instances.

The fixed-point branch of a QEBVerif twin is exact integer arithmetic on integer inputs, so it is
encoded exactly: per hidden neuron an integer code ``r`` with ``r = floor(A/D + 1/2)`` as two
integer rows, then ``clamp(r, 0, 2^Q − 1)``. The float branch is encoded on a scaled integer grid
(``U = 2^26`` units per 1.0) with every rounding of its coefficients carried as an interval slack
``E`` (sound in exact arithmetic, with two units per layer for onnxruntime's float64 error, which
is ~10^-13 here); ReLU is ``max(z, 0)`` on that grid. Each sign of the property is one
maximisation: the side is proven safe when CP-SAT's best bound plus the slack is below ε.

    pip install ortools   # not a dependency of the verifier: this script only measures
    python scripts/bench_cpsat.py [--tasks P1-4:3236:2,P1-4:5656:2,P2-4:5656:4,P2-4:3236:6,P4-4:3236:2]
                                  [--timeout 60] [--workers 2]
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

from vnncomp_qeb.io.fixed_point import fixed_point_layers  # noqa: E402

U = 2**26  # float branch: integer units per 1.0
K = 20  # later layers' weights: 2^K units per 1.0


def _ibp(lo, hi, W, b):
    """Interval of x @ W + b (exact integers or floats)."""
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    return lo @ Wp + hi @ Wn + b, hi @ Wp + lo @ Wn + b


def build(net, Q: int, lo: np.ndarray, hi: np.ndarray, c: int, sign: float):
    """CP-SAT model maximising sign·(N_c − Q_c) on an integer grid; returns (model, input
    variables, units per 1.0 of the objective, slack in those units)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    F_w, F_b, F_a = net.fractional_bits(Q)
    x = [m.NewIntVar(int(lo[i]), int(hi[i]), f"x{i}") for i in range(lo.size)]
    layers = fixed_point_layers(net, Q)
    # -- fixed-point branch: exact -------------------------------------------------------------
    cur, clo, chi = x, lo.astype(np.int64), hi.astype(np.int64)
    den = 256 * 2**F_w  # z·den is an integer: the first layer reads x/256
    for k, (W, b) in enumerate(layers):
        bias = b * (den // 2**F_b)
        alo, ahi = _ibp(clo, chi, W, bias)
        if k == len(layers) - 1:
            A_out, out_den = (sum(int(W[i, c]) * cur[i] for i in range(len(cur))) + int(bias[c])), den
            break
        nxt, nlo, nhi = [], [], []
        for j in range(W.shape[1]):
            A = sum(int(W[i, j]) * cur[i] for i in range(len(cur)) if W[i, j]) + int(bias[j])
            # r = floor(A·2^F_a/den + 1/2)  ⇔  den/2 − den < den·r − 2^F_a·A ≤ den/2
            rlo = int(np.floor(alo[j] * 2**F_a / den + 0.5))
            rhi = int(np.floor(ahi[j] * 2**F_a / den + 0.5))
            r = m.NewIntVar(rlo, rhi, f"r{k}_{j}")
            m.Add(den * r - 2**F_a * A <= den // 2)
            m.Add(den * r - 2**F_a * A >= den // 2 - den + 1)
            qlo, qhi = min(max(rlo, 0), 2**Q - 1), min(max(rhi, 0), 2**Q - 1)
            q = m.NewIntVar(qlo, qhi, f"q{k}_{j}")
            t = m.NewIntVar(max(rlo, 0), max(rhi, 0), f"t{k}_{j}")
            m.AddMaxEquality(t, [r, 0])
            m.AddMinEquality(q, [t, 2**Q - 1])
            nxt.append(q)
            nlo.append(qlo)
            nhi.append(qhi)
        cur, clo, chi = nxt, np.array(nlo), np.array(nhi)
        den = 2**F_a * 2**F_w  # later layers read code/2^F_a
    # -- float branch: scaled integers with slack ---------------------------------------------
    # every z and h is an integer in units of 1/U; a row 2^K·z ≈ Σ round(W·2^K)·h (the first layer:
    # z ≈ Σ round(W/255·U)·x). Invariant: for every real input an assignment exists with
    # |h − U·h_true| ≤ h_err (x: exact, h_err = 0).
    h, h_err, hmag = x, 0.0, np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        W, b = W.astype(np.float64), b.astype(np.float64)
        first, last = k == 0, k == len(net.weights) - 1
        mult = U / 255.0 if first else 2.0**K  # coefficient per unit of h
        row_unit = U if first else U * 2**K  # units of the row's value per 1.0
        new = []
        for j in ([c] if last else range(W.shape[1])):
            coef = np.round(W[:, j] * mult).astype(np.int64)
            bj = int(np.round(b[j] * row_unit))
            # |expr − row_unit·z_true| ≤ E: coefficient and bias rounding, h's error, float64 error
            E = float(np.sum(np.abs(coef - mult * W[:, j]) * (hmag + h_err)) + np.sum(np.abs(coef)) * h_err
                      + abs(bj - b[j] * row_unit) + row_unit * 1e-12 * (1 + float(np.abs(W[:, j]) @ hmag) / U))
            expr = sum(int(coef[i]) * h[i] for i in range(len(h)) if coef[i]) + bj
            if last:
                z_f, z_err, out_unit = expr, E, row_unit
                break
            d = row_unit // U  # z = round(U·z_true): d·z within E + d/2 of expr
            e = int(np.ceil(E + d / 2))
            zmax = int(np.ceil((float(np.abs(coef) @ (hmag + h_err)) + abs(bj) + e) / d)) + 1
            z = m.NewIntVar(-zmax, zmax, f"z{k}_{j}")
            m.Add(d * z - expr <= e)
            m.Add(d * z - expr >= -e)
            a = m.NewIntVar(0, zmax, f"h{k}_{j}")
            m.AddMaxEquality(a, [z, 0])
            new.append((a, zmax))
        if last:
            break
        h = [v for v, _ in new]
        hmag = np.array([v for _, v in new], dtype=np.float64)
        h_err = 0.5  # relu is 1-Lipschitz: |h − U·relu(z_true)| ≤ 1/2
    # objective: sign·(N − Q)·out_unit, with N's slack z_err and Q exact (Q = A_out/out_den)
    if out_unit % out_den:
        raise ValueError("Q's grid does not divide the float grid")
    m.Maximize(int(sign) * (z_f - (out_unit // out_den) * A_out))
    return m, x, out_unit, z_err


def difference(net, Q: int, x: np.ndarray, c: int) -> float:
    """N_c − Q_c at an integer input, exactly as the faithful twin computes it (Q in integers)."""
    F_w, F_b, F_a = net.fractional_bits(Q)
    layers = fixed_point_layers(net, Q)
    cur, den = x.astype(np.int64), 256 * 2**F_w
    for k, (W, b) in enumerate(layers):
        A = cur @ W + b * (den // 2**F_b)
        if k == len(layers) - 1:
            return float(net.float_forward(x[None])[0, c] - A[c] / den)
        cur = np.clip(np.floor(A * 2**F_a / den + 0.5), 0, 2**Q - 1).astype(np.int64)
        den = 2**F_a * 2**F_w


def solve(net, Q, lo, hi, c, eps, timeout, workers):
    from ortools.sat.python import cp_model

    t0 = time.monotonic()
    sides = []
    for k, sign in enumerate((1.0, -1.0)):
        m, xs, unit, slack = build(net, Q, lo, hi, c, sign)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.1, (timeout - (time.monotonic() - t0)) / (2 - k))
        solver.parameters.num_workers = workers
        st = solver.Solve(m)
        found = solver.ObjectiveValue() / unit if st in (cp_model.OPTIMAL, cp_model.FEASIBLE) else -np.inf
        bound = (solver.BestObjectiveBound() + slack) / unit if st != cp_model.INFEASIBLE else -np.inf
        sides.append((solver.StatusName(st), found, bound))
        if np.isfinite(found):  # replay the best point exactly
            x = np.array([solver.Value(v) for v in xs], dtype=np.float64)
            if sign * difference(net, Q, x, c) >= eps:
                return "sat", sides, time.monotonic() - t0
    verdict = "unsat" if all(b < eps for _, _, b in sides) else "unknown"
    return verdict, sides, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="P1-4:3236:2,P1-4:5656:2,P2-4:5656:4,P2-4:3236:6,P4-4:3236:2")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    samples = mnist_samples()
    ids = [int(v) for v in samples["paper_ids"]]
    print(f"{'task':18s} {'verdict':8s} {'time s':>7s}   side +: status, best, bound   side −: status, best, bound")
    for task in args.tasks.split(","):
        row, sid, eps = task.split(":")
        pname, Q = row.split("-")
        net = qebnet(MNIST_NETS[pname])
        x0 = samples["paper_images"][ids.index(int(sid))].astype(np.float64)
        c = int(np.argmax(net.float_forward(x0[None])[0]))
        lo, hi = np.clip(x0 - 3, 0, 255), np.clip(x0 + 3, 0, 255)
        verdict, sides, t = solve(net, int(Q), lo, hi, c, float(eps), args.timeout, args.workers)
        cells = "   ".join(f"{s}, {f:.4f}, {b:.4f}" for s, f, b in sides)
        print(f"{task:18s} {verdict:8s} {t:7.1f}   {cells}", flush=True)


if __name__ == "__main__":
    main()
