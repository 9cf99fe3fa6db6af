"""MILP over one box: prove a case's polytopes from the dual bound, or produce witness candidates.

For each unsafe polytope ``A·y ≤ b`` the model maximises the smallest slack ``s = min_k (b_k − A_k·y)``:
- proof model (widened bands, float32 slack): a dual bound ``< −tol`` proves the polytope
  unreachable from the box; a timeout still leaves a certified upper bound on ``s``;
- when the proof model's best point has ``s ≥ −tol``, it seeds the witness model (exact rows,
  ties excluded), whose points go to the caller for an onnxruntime replay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vnncomp_qeb.analysis.difference import DifferenceAnalysis
from vnncomp_qeb.analysis.dra import cached_difference_graph, refined_bounds
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.milp.backends import INFEASIBLE, Backend, solve_with_fallback
from vnncomp_qeb.milp.encode import PROOF, WITNESS, Cut, Encoding, encode
from vnncomp_qeb.spec import Polytope

PROOF_TOL = 1e-6  # the dual bound must clear 0 by this (relative to the objective's scale)


@dataclass
class BoxResult:
    """``proven``: every polytope is unreachable; ``found``: the checker accepted a point;
    ``bound``: certified upper bound of the best polytope slack (−inf when all infeasible)."""

    proven: bool
    found: object = None
    bound: float = np.inf
    solves: list = field(default_factory=list)


def difference_cuts(graph: Graph, bounds, relaxations) -> list[Cut]:
    """The DRA's relations between N and Q for every paired hidden tensor of a layered twin:
    the intervals of ``z − ẑ`` and ``a − â``, and the linear relaxation
    ``αL·(z − ẑ) + βL ≤ a − â ≤ αU·(z − ẑ) + βU`` the analysis itself uses (a relation the
    LP of N and Q encoded apart does not see: the two ReLU triangles drift independently)."""
    dg = cached_difference_graph(graph)
    if dg is None:
        return []
    analysis = DifferenceAnalysis(dg, bounds, relaxations)
    local = analysis.local
    cuts: list[Cut] = []
    for op in dg.graph.ops:
        if op.kind == "DiffActivation":
            noise = dg.graph.producer[op.inputs[0]]
            cuts.append(Cut((op.z, op.zq), (1.0, -1.0), *local[noise.output]))
            if op.a != op.z or op.aq != op.zq:
                cuts.append(Cut((op.a, op.aq), (1.0, -1.0), *local[op.output]))
                aL, bL, aU, bU = (v[0] for v in analysis.rel.get(op, local))
                # the relation holds for the computed z − ẑ (what the columns are), so no noise term
                cuts.append(Cut((op.a, op.aq, op.z, op.zq), (1.0, -1.0, -aL, aL), lo=bL))
                cuts.append(Cut((op.a, op.aq, op.z, op.zq), (1.0, -1.0, -aU, aU), hi=bU))
    return cuts


def _with_objective(enc: Encoding, p: Polytope, y_lo: np.ndarray, y_hi: np.ndarray):
    """A copy of the model maximising s ≤ b_k − A_k·y; (model, column of s, tolerance)."""
    m = enc.model.copy()
    y = enc.outputs
    A = p.A
    row_lo = y_lo @ np.maximum(A, 0).T + y_hi @ np.minimum(A, 0).T
    row_hi = y_hi @ np.maximum(A, 0).T + y_lo @ np.minimum(A, 0).T
    s = m.add_vars(np.array([np.min(p.b - row_hi)]), np.array([np.min(p.b - row_lo)]))
    k = A.shape[0]
    cols = np.concatenate([np.full((k, 1), s[0]), np.tile(y, (k, 1))], axis=1)
    m.add_rows(cols, np.concatenate([np.ones((k, 1)), A], axis=1), -np.inf, p.b)
    m.set_objective(s, np.ones(1))
    scale = 1.0 + np.max(np.abs(p.b)) + np.max(np.abs(A) @ np.maximum(np.abs(y_lo), np.abs(y_hi)))
    return m, s[0], PROOF_TOL * scale


def milp_box(graph: Graph, lower: np.ndarray, upper: np.ndarray, polytopes: list[Polytope], *,
             integer_input: bool, deadline: float, chain: list[Backend],
             check: Callable[[np.ndarray], object], stop=None, log: Callable[[str], None] = lambda m: None,
             use_cuts: bool = True) -> BoxResult:
    """Decide the polytopes over one box (domain coordinates). ``check`` replays candidate input
    points (rows of an array) and returns a truthy outcome for a confirmed witness."""
    bounds, relaxations = refined_bounds(graph, lower[None].astype(np.float64), upper[None].astype(np.float64))
    cuts = difference_cuts(graph, bounds, relaxations) if use_cuts else []
    proof = encode(graph, bounds, PROOF, integer_input, cuts)
    witness = None
    y_lo = np.concatenate([bounds[o][0].reshape(-1) for o in graph.outputs])
    y_hi = np.concatenate([bounds[o][1].reshape(-1) for o in graph.outputs])
    result = BoxResult(proven=True, bound=-np.inf)
    order = sorted(range(len(polytopes)), key=lambda i: -_optimism(polytopes[i], y_lo, y_hi))
    for i in order:
        p = polytopes[i]
        left = deadline - time.monotonic()
        if left <= 0:
            result.proven, result.bound = False, np.inf
            return result
        model, s_col, tol = _with_objective(proof, p, y_lo, y_hi)
        r = solve_with_fallback(chain, model, left, stop=stop, stop_below=-tol)
        result.solves.append(r)
        log(f"milp proof polytope {i}: {r.status} bound {r.bound:.6g} best "
            f"{r.objective if r.objective is None else f'{r.objective:.6g}'} ({r.seconds:.2f}s, {r.backend}, "
            f"{proof.model.n_vars} cols, {proof.n_binaries} binaries, {proof.n_stair_cuts} staircase cuts)")
        if r.status == INFEASIBLE or r.bound < -tol:
            continue
        result.proven = False
        result.bound = max(result.bound, r.bound)
        if r.x is not None and r.objective is not None and r.objective >= -tol:
            found = check(r.x[proof.inputs][None])
            if found:
                result.found = found
                return result
            if witness is None:
                witness = encode(graph, bounds, WITNESS, integer_input)
            wmodel, _, _ = _with_objective(witness, p, y_lo, y_hi)
            start = _transfer(proof, witness, r.x)
            left = deadline - time.monotonic()
            w = solve_with_fallback(chain, wmodel, max(left, 0.01), stop=stop, start=start, stop_above=0.0)
            log(f"milp witness polytope {i}: {w.status} best {w.objective}")
            if w.x is not None and w.objective is not None and w.objective >= 0:
                found = check(w.x[witness.inputs][None])
                if found:
                    result.found = found
                    return result
    return result


def _optimism(p: Polytope, y_lo: np.ndarray, y_hi: np.ndarray) -> float:
    """Upper bound of the polytope's slack from output intervals (larger: more likely hit)."""
    row_lo = y_lo @ np.maximum(p.A, 0).T + y_hi @ np.minimum(p.A, 0).T
    return float(np.min(p.b - row_lo)) if p.A.shape[0] else np.inf


def _transfer(src: Encoding, dst: Encoding, x: np.ndarray) -> np.ndarray | None:
    """Start values for ``dst`` from a point of ``src`` (same graph): tensor columns copied,
    the remaining columns left at 0 for the solver to repair."""
    out = np.zeros(dst.model.n_vars + 1)
    for name, cols in dst.columns.items():
        if name in src.columns:
            out[cols] = x[src.columns[name]]
    return None if not np.isfinite(out).all() else out
