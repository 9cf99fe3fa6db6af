"""MILP over one box: prove a case's polytopes from the dual bound, or produce witness candidates.

For each unsafe polytope ``A·y ≤ b`` the model maximises the smallest slack ``s = min_k (b_k − A_k·y)``:
- proof model (widened bands, float32 slack): a dual bound ``< −tol`` proves the polytope
  unreachable from the box; a timeout still leaves a certified upper bound on ``s``;
- once a polytope is left unproven, the local search over the input grid
  (:mod:`vnncomp_qeb.search.moves`) climbs from the best points known, then the witness model
  (exact rows; ties excluded unless the rounding's input is exact, where the band breaks them as
  onnxruntime does) is searched around its best point (:mod:`vnncomp_qeb.milp.neighbourhood`);
  their points go to the caller for an onnxruntime replay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vnncomp_qeb.analysis.difference import DifferenceAnalysis
from vnncomp_qeb.analysis.dra import cached_difference_graph, refined_bounds
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.milp.backends import INFEASIBLE, Backend, GiveUp, solve_with_fallback
from vnncomp_qeb.milp.encode import PROOF, WITNESS, Cut, Encoding, encode
from vnncomp_qeb.milp.neighbourhood import neighbourhood_search
from vnncomp_qeb.search.moves import iterated_search
from vnncomp_qeb.spec import Polytope

PROOF_TOL = 1e-6  # the dual bound must clear 0 by this (relative to the objective's scale)
PROOF_SHARE = 0.5  # of the box's time for the proof model; the witness search gets the rest
LOCAL_SHARE = 0.75  # of the witness search's time for the local search, before the MILP neighbourhoods
# a proof keeps its core past its share while its bound is below 1/WITNESS_FAR of how far the best
# known point is from the polytope: a witness search that far off rarely closes the gap
WITNESS_FAR = 2.0
# the proof model keeps integer inputs only up to this many free inputs: beyond, branching on one
# input rarely decides anything and strong branching wastes its probes on them (the relaxation is
# sound: it only adds points). Measured on the 784-input QEBVerif twins (one core, with the
# cutoff): P2 Q4 id3236 ε = 6 proven in 25 s instead of 42 s; P2 Q6 id3236 ε = 1 (the − side)
# 93 % of the tree explored at 60 s instead of 66 %; P1 Q4 id3236 ε = 2 bound 0.32 instead of 0.37
INTEGER_INPUTS_MAX = 64


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
        if op.kind == "DiffActivation" and op.z != op.zq:  # (Q's input quantizer: its band rows say it all)
            # the op's input is Δ' = (zk·z + zc) − (qk·ẑ + qc) (1 and 0 unless a chain has affine steps)
            noise = dg.graph.producer[op.inputs[0]]
            zk, qk = np.asarray(op.zk, dtype=np.float64), np.asarray(op.qk, dtype=np.float64)
            off = np.asarray(op.zc, dtype=np.float64) - np.asarray(op.qc, dtype=np.float64)
            d_lo, d_hi = local[noise.output]
            cuts.append(Cut((op.z, op.zq), (zk, -qk), d_lo.reshape(-1) - off, d_hi.reshape(-1) - off))
            if op.a != op.z or op.aq != op.zq:
                cuts.append(Cut((op.a, op.aq), (1.0, -1.0), *local[op.output]))
                aL, bL, aU, bU = (v[0] for v in analysis.rel.get(op, local))
                # the relation holds for the computed z, ẑ (what the columns are), so no noise term
                cuts.append(Cut((op.a, op.aq, op.z, op.zq), (1.0, -1.0, -aL * zk, aL * qk), lo=bL + aL * off))
                cuts.append(Cut((op.a, op.aq, op.z, op.zq), (1.0, -1.0, -aU * zk, aU * qk), hi=bU + aU * off))
    return cuts


def _with_objective(enc: Encoding, p: Polytope, y_lo: np.ndarray, y_hi: np.ndarray):
    """A copy of the model maximising s ≤ b_k − A_k·y; (model, column of s, tolerance)."""
    m = enc.model.copy()
    y = enc.outputs
    A = p.A
    row_hi = y_hi @ np.maximum(A, 0).T + y_lo @ np.minimum(A, 0).T
    s = m.add_vars(np.array([np.min(p.b - row_hi)]), np.array([_interval_slack_bound(p, y_lo, y_hi)]))
    k = A.shape[0]
    cols = np.concatenate([np.full((k, 1), s[0]), np.tile(y, (k, 1))], axis=1)
    m.add_rows(cols, np.concatenate([np.ones((k, 1)), A], axis=1), -np.inf, p.b)
    m.set_objective(s, np.ones(1))
    scale = 1.0 + np.max(np.abs(p.b)) + np.max(np.abs(A) @ np.maximum(np.abs(y_lo), np.abs(y_hi)))
    return m, s[0], PROOF_TOL * scale


def milp_box(graph: Graph, lower: np.ndarray, upper: np.ndarray, polytopes: list[Polytope], *,
             integer_input: bool, deadline: float, chain: list[Backend],
             check: Callable[[np.ndarray], object], stop=None, log: Callable[[str], None] = lambda m: None,
             use_cuts: bool = True, starts: np.ndarray | None = None, search: bool = True,
             seed: int = 0, prove: bool = True, progress: Callable[[float], None] | None = None,
             hunt: list[Polytope] | None = None) -> BoxResult:
    """Decide the polytopes over one box (domain coordinates). ``check`` replays candidate input
    points (rows of an array) and returns its outcome (not None) for a confirmed witness.

    The proof model gets the first ``PROOF_SHARE`` of the time (less where its dual bound stalls,
    :func:`~vnncomp_qeb.milp.backends.bound_stalled`) — or all of it while its bound stays below
    ``1/WITNESS_FAR`` of the distance from the best known point to the polytope (the proof is
    closer to done than the witness search); it is solved with a cutoff just below the proof's
    target, so the solver prunes what cannot matter. Once a polytope is left unproven the case
    cannot be proven, and the rest goes to :func:`neighbourhood_search` from ``starts``
    (points in domain coordinates, e.g. the falsifier's best) and the proof model's incumbents.
    With ``prove=False`` (a helper on a core another share left free) only the search runs.
    ``progress`` is told the certified bound of the polytopes so far (the interval bound for
    those not reached yet) whenever it improves: a caller that stops this early keeps it.
    ``hunt``: the polytopes the local search that opens the witness search aims at (default: the
    open ones; a share of a case passes all of the case's, since any witness settles it, and
    ``check`` must then accept a point in any of them)."""
    bounds, relaxations = refined_bounds(graph, lower[None].astype(np.float64), upper[None].astype(np.float64))
    if prove:
        cuts = difference_cuts(graph, bounds, relaxations) if use_cuts else []
        free = int(np.sum(upper > lower))
        proof = encode(graph, bounds, PROOF, integer_input and free <= INTEGER_INPUTS_MAX, cuts)
    y_lo = np.concatenate([bounds[o][0].reshape(-1) for o in graph.outputs])
    y_hi = np.concatenate([bounds[o][1].reshape(-1) for o in graph.outputs])
    result = BoxResult(proven=prove, bound=-np.inf if prove else np.inf)
    now = time.monotonic()
    proof_until = now + PROOF_SHARE * (deadline - now) if search else deadline
    seeds = [np.asarray(starts, dtype=np.float64).reshape(-1, lower.size)] if starts is not None else []
    seeds.append(((lower + upper) / 2)[None])
    unproven: list[int] = [] if prove else list(range(len(polytopes)))
    if prove and search:  # how far the best known point is from each polytope (> 0: none inside)
        y = graph.evaluate(np.vstack(seeds))
        distance = [max(-float(np.max(p.margin(y))), 0.0) for p in polytopes]
    # most likely hit first: its witness ends the case; a polytope the proof share does not reach
    # keeps the interval bound, so a timeout still reports a certified (if loose) bound
    caps = [_interval_slack_bound(p, y_lo, y_hi) for p in polytopes]
    order = sorted(range(len(polytopes)), key=lambda i: -caps[i]) if prove else []
    tell = progress or (lambda bound: None)
    for n_done, i in enumerate(order):
        tell(max([result.bound] + [caps[j] for j in order[n_done:]]))
        p = polytopes[i]
        left = proof_until - time.monotonic()
        if left <= 0:
            result.proven = False
            result.bound = max(result.bound, caps[i])
            unproven.append(i)
            continue
        model, s_col, tol = _with_objective(proof, p, y_lo, y_hi)
        # a proof past its share or stalled hands its time to the witness search (when there is one),
        # unless it is nearer its end than the witness search is
        give_up = GiveUp(proof_until, distance[i] / WITNESS_FAR) if search else None
        r = solve_with_fallback(chain, model, deadline - time.monotonic(), stop=stop, stop_below=-tol,
                                give_up=give_up, cutoff=-2 * tol)
        result.solves.append(r)
        done = r.status == INFEASIBLE or r.bound < -tol
        if done:
            what = "proven unreachable" + ("" if r.status == INFEASIBLE else f" (slack ≤ {r.bound:.4g} < 0)")
        else:
            why = {"stalled": "bound stalled, time goes to the witness search",
                   "share": "past its share, time goes to the witness search"}.get(r.message, r.status)
            what = f"open: slack ≤ {r.bound:.4g} ({why})" + (
                "" if r.objective is None else f", best point found {r.objective:.4g}")
        log(f"polytope {i + 1}/{len(polytopes)} {what} — {r.seconds:.2f}s {r.backend}, {proof.model.n_vars} columns, "
            f"{proof.n_binaries} binaries, {proof.n_stair_cuts} staircase cuts")
        if done:
            continue
        result.proven = False
        result.bound = max(result.bound, min(r.bound, caps[i]))
        unproven.append(i)
        if r.x is not None:
            seeds.insert(0, r.x[proof.inputs][None])
            if r.objective is not None and r.objective >= -tol:
                found = check(r.x[proof.inputs][None])
                if found is not None:
                    result.found = found
                    return result
    if prove:
        tell(result.bound)
    if unproven and time.monotonic() < deadline - 0.1:
        log(f"witness search on {len(unproven)} open polytope(s) for {deadline - time.monotonic():.0f}s")
        # the local search first (seconds of cheap exact moves), the MILP neighbourhoods from its end
        aims = hunt or [polytopes[i] for i in unproven]
        stats: dict = {}
        x, m, found = iterated_search(graph, lambda y: np.max([p.margin(y) for p in aims], axis=0),
                                      np.vstack(seeds), lower, upper, integer_input,
                                      time.monotonic() + LOCAL_SHARE * (deadline - time.monotonic()),
                                      np.random.default_rng(seed), check, stats)
        if found is not None:
            log(f"local search: witness after {stats['climbs']} climbs (margin {m:.6g})")
            result.found = found
            return result
        log(f"local search: {stats.get('climbs', 0)} climbs, best margin {m:.6g}")
        seeds.insert(0, x[None])
        witness = encode(graph, bounds, WITNESS, integer_input)
        targets = [(_with_objective(witness, polytopes[i], y_lo, y_hi)[0], polytopes[i]) for i in unproven]
        result.found = neighbourhood_search(witness, targets, np.vstack(seeds), integer_input=integer_input,
                                            deadline=deadline, chain=chain, check=check,
                                            rng=np.random.default_rng(seed), stop=stop, log=log)
    return result


def _interval_slack_bound(p: Polytope, y_lo: np.ndarray, y_hi: np.ndarray) -> float:
    """Sound upper bound of the polytope's slack from the output intervals (larger: more likely hit)."""
    row_lo = y_lo @ np.maximum(p.A, 0).T + y_hi @ np.minimum(p.A, 0).T
    return float(np.min(p.b - row_lo)) if p.A.shape[0] else np.inf
