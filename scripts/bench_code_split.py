"""Avenue measurement (issue 20): branch and bound on the hidden rounding codes, each node bounded
by the batched DRA, on one side of a hard QEBVerif task.

A node narrows the code range of some rounding neurons (FakeQuant); its bound is the DRA over the
task's whole input box with those neurons' input intervals cut to their codes (the difference
analysis and the joint back-substitution, the best of both, never above the parent's). Best
first: the ``--batch`` nodes with the highest bound are split on the neuron with the widest code
range weighted by its output weight, and their children bounded in one numpy pass. With
``--beta N``, the first rounding layer's split constraints (linear in the input) also enter each
node's final maximisation over the box through N projected supergradient steps on their
Lagrange multipliers (any multipliers give a sound bound). Prints the global bound as it goes.

    python scripts/bench_code_split.py [--task P1-4:3236:2] [--side 0] [--timeout 20] [--beta 0]

Measured (session 13, P1-4 id3236 ε = 2, N − Q ≥ 2 side): 0.5134 at the root and after 19,583
nodes in 20 s; with ``--beta 30``, 0.5123 after 14,975 nodes. HiGHS on the proof model: 0.368
at 60 s. Not kept.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import tempfile
import time

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchgen import MNIST_NETS, mnist_samples, qebnet  # noqa: E402

from vnncomp_qeb.analysis.backsub import Relaxations, exact_by_intervals, linear_bounds  # noqa: E402
from vnncomp_qeb.analysis.difference import DifferenceAnalysis  # noqa: E402
from vnncomp_qeb.analysis.dra import _refine, cached_difference_graph  # noqa: E402
from vnncomp_qeb.analysis.interval import propagate_op  # noqa: E402
from vnncomp_qeb.io.fixed_point import faithful_twin  # noqa: E402
from vnncomp_qeb.io.instance import load_instance  # noqa: E402
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1  # noqa: E402
from vnncomp_qeb.ir import ops  # noqa: E402
from vnncomp_qeb.search.domains import domain_for  # noqa: E402


def task_instance(task: str, workdir: str):
    """The twin and property of ``P<n>-<Q>:<sample id>:<ε>`` (one of the first 30 paper samples)."""
    row, sid, eps = task.split(":")
    pname, Q = row.split("-")
    net = qebnet(MNIST_NETS[pname])
    samples = mnist_samples()
    i = [int(v) for v in samples["paper_ids"]].index(int(sid))
    x0 = samples["paper_images"][i].astype(np.float64)
    target = int(np.argmax(net.float_forward(x0[None])[0]))
    twin, spec = os.path.join(workdir, "twin.onnx"), os.path.join(workdir, "spec.vnnlib")
    onnx.save(faithful_twin(net, int(Q)), twin)
    with open(spec, "w") as f:
        f.write(error_bound_v1(np.clip(x0 - 3, 0, 255), np.clip(x0 + 3, 0, 255), float(eps), [target], 10))
    return load_instance(spec, twin)


def node_bounds(g, L, U, narrowed):
    """The DRA's interval bounds and relaxations over boxes (B, n) with some tensors' intervals
    cut to ``narrowed[t] = (lo, hi)`` (B, size) right after they are computed."""
    B = L.shape[0]
    shape = (B,) + tuple(g.input_shape)
    bounds = {g.input_name: (L.reshape(shape), U.reshape(shape))}
    rel = Relaxations()
    exact = exact_by_intervals(g)
    for op in g.ops:
        if isinstance(op, ops.Clamp) or getattr(op, "relaxes_input", False):
            t = op.inputs[0]
            if t not in exact:
                _refine(g, bounds, rel, op, t)
            if t in narrowed:
                lo, hi = bounds[t]
                n_lo, n_hi = narrowed[t]
                bounds[t] = (np.maximum(lo.reshape(B, -1), n_lo).reshape(lo.shape),
                             np.minimum(hi.reshape(B, -1), n_hi).reshape(hi.shape))
        bounds[op.output] = propagate_op(op, [bounds[n] for n in op.inputs])
    return bounds, rel


def slack_bounds(g, L, U, narrowed, poly, slabs=None, beta_steps=0):
    """Upper bounds (B,) of the polytope's slack over each node; −inf for an empty node."""
    bounds, rel = node_bounds(g, L, U, narrowed)
    got_d, got_j = [], []
    d_rows, _ = DifferenceAnalysis(cached_difference_graph(g), bounds, rel).rows(poly.A, got_d)
    j_rows, _ = linear_bounds(g, bounds, rel, g.outputs[0], poly.A, got_j)
    joint = j_rows[:, 0] > d_rows[:, 0]
    low = np.maximum(d_rows[:, 0], j_rows[:, 0])
    if slabs is not None and beta_steps:
        c = np.where(joint[:, None], got_j[0][:, 0], got_d[0][:, 0])  # the bound's input coefficients
        A, a0, lo, hi = slabs
        base = np.sum(np.where(c > 0, c * L, c * U), axis=1)
        best = base.copy()
        mu_hi, mu_lo = np.zeros(lo.shape), np.zeros(lo.shape)
        up, dn = np.isfinite(hi), np.isfinite(lo)
        hi, lo = np.where(up, hi, a0), np.where(dn, lo, a0)  # an open side: no constraint, no term
        for _ in range(beta_steps):
            cc = c + (mu_hi - mu_lo) @ A
            x = np.where(cc > 0, L, U)
            ax = x @ A.T + a0
            value = np.sum(cc * x, axis=1) + np.sum(mu_hi * (a0 - hi) + mu_lo * (lo - a0), axis=1)
            best = np.maximum(best, value)
            mu_hi = np.where(up, np.maximum(mu_hi + 0.05 * (ax - hi), 0), 0)
            mu_lo = np.where(dn, np.maximum(mu_lo + 0.05 * (lo - ax), 0), 0)
        low = low + (best - base)
    empty = np.zeros(L.shape[0], dtype=bool)
    for t in narrowed:
        lo, hi = bounds[t]
        empty |= np.any(lo.reshape(L.shape[0], -1) > hi.reshape(L.shape[0], -1), axis=1)
    return np.where(empty, -np.inf, poly.b[0] - low), bounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="P1-4:3236:2")
    ap.add_argument("--side", type=int, default=0, help="polytope index (0: N − Q ≥ ε)")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--beta", type=int, default=0, help="supergradient steps on the split constraints")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        inst = task_instance(args.task, d)
    case = inst.cases[0]
    poly = case.polytopes[args.side]
    domain = domain_for(inst.graph)
    L0, U0 = domain.initial(case)
    g = domain.analysis_graph
    root, bounds = slack_bounds(g, L0, U0, {}, poly)
    print(f"root slack bound {root[0]:.4f}")
    fqs = [op for op in g.ops if op.kind == "FakeQuant"]
    layers = []  # per rounding layer: (op, scale, qmin, qmax, output weight per neuron)
    consumers = g.consumers()
    for op in fqs:
        s, a, b, _ = op.clamp_params()
        nxt = consumers[op.output][0]
        weight = np.abs(nxt.W @ poly.A[0]) if nxt.W.shape[1] == poly.A.shape[1] else np.abs(nxt.W).sum(1)
        layers.append((op, float(s), float(a), float(b), weight + 1e-9))
    codes0 = []
    for op, s, a, b, _ in layers:
        lo, hi = bounds[op.inputs[0]]
        codes0.append(np.stack([np.clip(np.floor(lo.reshape(-1) / s + 0.5), a, b),
                                np.clip(np.floor(hi.reshape(-1) / s + 0.5), a, b)]))
        print(f"{op.output}: {int(np.sum(codes0[-1][1] > codes0[-1][0]))} neurons span several codes")
    slab_rows = None
    if args.beta:  # the first rounding layer's input as an affine map of the box (finite differences)
        mid = (L0[0] + U0[0]) / 2
        v = g.run(np.vstack([mid[None], mid[None] + np.eye(mid.size)]), keep_all=True)[fqs[0].inputs[0]]
        v = v.reshape(mid.size + 1, -1)
        A = (v[1:] - v[0]).T
        slab_rows = (A, v[0] - A @ mid)
    heap = [(-root[0], 0, codes0)]
    count, nodes, t0 = 1, 1, time.monotonic()
    leaves = -np.inf  # the best bound of nodes with every code fixed (kept in the reported bound)
    last = t0
    while heap and time.monotonic() - t0 < args.timeout:
        popped = [heapq.heappop(heap) for _ in range(min(args.batch, len(heap)))]
        kids, parents = [], []
        for neg, _, codes in popped:
            best = None
            for f, (_, _, _, _, w) in enumerate(layers):
                score = (codes[f][1] - codes[f][0]) * w
                j = int(np.argmax(score))
                if score[j] > 0 and (best is None or score[j] > best[0]):
                    best = (score[j], f, j)
            if best is None:  # every code fixed: a leaf this prototype does not solve further
                leaves = max(leaves, -neg)
                continue
            _, f, j = best
            lo_k, hi_k = codes[f][:, j]
            mid_k = np.floor((lo_k + hi_k) / 2)
            for a_, b_ in ((lo_k, mid_k), (mid_k + 1, hi_k)):
                child = [c.copy() for c in codes]
                child[f][:, j] = (a_, b_)
                kids.append(child)
                parents.append(-neg)
        if not kids:
            break
        narrowed = {}
        for f, (op, s, a, b, _) in enumerate(layers):
            klo = np.stack([k[f][0] for k in kids])
            khi = np.stack([k[f][1] for k in kids])
            narrowed[op.inputs[0]] = (np.where(klo <= a, -np.inf, s * (klo - 0.5)),
                                      np.where(khi >= b, np.inf, s * (khi + 0.5)))
        slabs = None
        if slab_rows is not None:
            slabs = slab_rows + narrowed[fqs[0].inputs[0]]
        n = len(kids)
        sb, _ = slack_bounds(g, np.repeat(L0, n, 0), np.repeat(U0, n, 0), narrowed, poly, slabs, args.beta)
        sb = np.minimum(sb, parents)
        nodes += n
        for k in range(n):
            if sb[k] > 0:
                heapq.heappush(heap, (-sb[k], count, kids[k]))
                count += 1
        if time.monotonic() - last > 5:
            last = time.monotonic()
            print(f"{last - t0:6.1f}s  {nodes} nodes, {len(heap)} open, bound {_bound(heap, leaves):.4f}", flush=True)
    print(f"{time.monotonic() - t0:.1f}s: {nodes} nodes, {len(heap)} open, bound {_bound(heap, leaves):.4f} "
          "(≤ 0: proven)")


def _bound(heap, leaves: float) -> float:
    return max(-heap[0][0] if heap else 0.0, leaves)


if __name__ == "__main__":
    main()
