"""``vnncomp-qeb max-error``: a certified interval ``[lower, upper]`` for ``max_x max_i |N(x)_i −
Q(x)_i|`` over a property's input region, per output and overall, that narrows as time goes.

- ``lower`` is attained: an input of the region where onnxruntime, on the original file(s), shows
  that difference (sampling, gradient ascent and local search on |N − Q|, then the midpoints of the
  worst boxes, each replayed).
- ``upper`` is sound by the same rules as ``unsat``: the DRA's bounds over a set of boxes that
  covers the region; branch and bound splits the box with the largest bound first (on snapped
  inputs down to single codes, where the exact value closes the gap); on wide regions the MILP's
  dual bounds then lower it further.
"""

from __future__ import annotations

import heapq
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vnncomp_qeb.analysis.dra import difference_bounds
from vnncomp_qeb.errors import SpecError
from vnncomp_qeb.io.instance import Instance
from vnncomp_qeb.io.replay import input_type, joint_output, snap_into_box
from vnncomp_qeb.search.attack import pgd
from vnncomp_qeb.search.domains import CodeDomain, domain_for
from vnncomp_qeb.search.moves import iterated_search
from vnncomp_qeb.search.sampling import best_candidates, box_points
from vnncomp_qeb.spec import Case, Polytope

SAMPLES = 4096
MILP_DIMS = 12  # more free inputs than this: the MILP gets the time branch and bound leaves
SPLIT_SHARE = 0.5
BATCH = 64  # boxes bounded per DRA call
REPLAYS = 8  # candidate points replayed per round
GRACE_S = 2.0  # a MILP child may overrun its solver's time limit by this much


@dataclass
class MaxError:
    """The certified interval, per output (``outputs``: index → (lower, upper)) and overall, with
    the witness of ``lower`` (flat input, as fed to the model) and the interval over time."""

    lower: float = 0.0
    upper: float = np.inf
    witness: np.ndarray | None = None
    outputs: dict[int, list[float]] = field(default_factory=dict)
    history: list[tuple[float, float, float]] = field(default_factory=list)
    time: float = 0.0
    boxes: int = 0

    def to_json(self) -> dict:
        return {"lower": self.lower, "upper": self.upper, "time": self.time, "boxes": self.boxes,
                "witness": None if self.witness is None else [float(v) for v in self.witness],
                "outputs": {str(i): {"lower": lo, "upper": hi} for i, (lo, hi) in sorted(self.outputs.items())},
                "history": [list(h) for h in self.history]}


def error_outputs(case: Case) -> list[int]:
    """The outputs an error-bound property names (every polytope one row ``±y_i ≥ ε``)."""
    outs = set()
    for p in case.polytopes:
        nz = np.flatnonzero(p.A[0]) if p.A.shape[0] == 1 else []
        if p.A.shape[0] != 1 or len(nz) != 1 or abs(p.A[0, nz[0]]) != 1:
            raise SpecError("max-error needs an error-bound property: every unsafe polytope one row "
                            "Y_i >= eps or Y_i <= -eps (on N - Q)")
        outs.add(int(nz[0]))
    return sorted(outs)


def _abs_case(case: Case, outputs: list[int], m: int) -> Case:
    """A case whose margin is max_i |y_i| over ``outputs`` (for the attacks to maximise)."""
    return Case(case.lower, case.upper, [_side(i, sign, 0.0, m) for i in outputs for sign in (1.0, -1.0)])


def _side(i: int, sign: float, t: float, m: int) -> Polytope:
    """The polytope ``sign·y_i ≥ t`` (slack ``sign·y_i − t``)."""
    A = np.zeros((1, m))
    A[0, i] = -sign
    return Polytope(A, np.array([-t]), np.zeros(1, dtype=bool))


class _Search:
    def __init__(self, inst: Instance, deadline: float, log: Callable[[str], None], seed: int):
        if len(inst.cases) != 1:
            raise SpecError("max-error takes a property with one input box")
        self.inst, self.deadline, self.log = inst, deadline, log
        self.case = inst.cases[0]
        self.outputs = error_outputs(self.case)
        self.m = inst.graph.output_size
        self.target = _abs_case(self.case, self.outputs, self.m)
        self.rng = np.random.default_rng(seed)
        self.dtype = input_type(inst)
        self.result = MaxError(outputs={i: [0.0, np.inf] for i in self.outputs})
        self.start = time.monotonic()
        self.last_print = 0.0

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline

    def note(self) -> None:
        r = self.result
        t = time.monotonic() - self.start
        r.history.append((t, r.lower, r.upper))
        if t - self.last_print >= 0.5 or self.out_of_time():
            self.last_print = t
            self.log(f"[{t:7.2f}s] max |N − Q| in [{r.lower:.6g}, {r.upper:.6g}]  (gap {r.upper - r.lower:.3g}, "
                     f"{r.boxes} boxes)")

    def observe(self, points: np.ndarray) -> None:
        """Replay the most promising points in onnxruntime; raise ``lower`` with what they attain."""
        cand, _ = best_candidates(self.inst.graph, self.target, points, REPLAYS)
        for x in cand:
            xt = snap_into_box(x, self.case.lower, self.case.upper, self.dtype)
            if xt is None:
                continue
            y = self._difference(joint_output(self.inst, xt))
            for i in self.outputs:
                if abs(y[i]) > self.result.outputs[i][0]:
                    self.result.outputs[i][0] = float(abs(y[i]))
            if float(np.max(np.abs(y[self.outputs]))) > self.result.lower:
                self.result.lower = float(np.max(np.abs(y[self.outputs])))
                self.result.witness = xt

    def _difference(self, y: np.ndarray) -> np.ndarray:
        """N − Q from the joint output onnxruntime gives (a pair: Y and YQ side by side)."""
        spec = self.inst.spec
        if spec.version == "1.0" or len(spec.networks) == 1:
            return y
        n, q = spec.networks
        yn = y[np.concatenate([v.index for v in spec.outputs_of(n)])]
        yq = y[np.concatenate([v.index for v in spec.outputs_of(q)])]
        return yn - yq

    def falsify(self, domain, L: np.ndarray, U: np.ndarray) -> None:
        """Raise ``lower``: samples, gradient ascent, then the local search over the input grid
        (in the domain's coordinates: codes where the input is snapped)."""
        points = box_points(self.case.lower, self.case.upper, SAMPLES, self.rng)
        self.observe(points)
        starts, _ = best_candidates(self.inst.graph, self.target, points, 8)
        visited = pgd(self.inst.graph, self.target, starts, 20, self.rng)
        self.observe(visited)
        until = min(self.deadline, time.monotonic() + 0.1 * max(self.deadline - time.monotonic(), 0))
        starts = domain.from_input(best_candidates(self.inst.graph, self.target, visited, 16)[0])
        x, _, _ = iterated_search(domain.graph, self.target.margin, starts, L[0], U[0],
                                  isinstance(domain, CodeDomain), until, self.rng,
                                  lambda p: self.observe(domain.to_input(p, self.case)))  # never stops it
        self.observe(domain.to_input(x[None], self.case))
        self.note()

    def bound(self, domain, L: np.ndarray, U: np.ndarray) -> np.ndarray:
        """(B, outputs) upper bounds of |y_i| over each box."""
        lo, hi = difference_bounds(domain.analysis_graph, L, U, "best")
        self.result.boxes += L.shape[0]
        return np.maximum(hi[:, self.outputs], -lo[:, self.outputs])

    def refine(self, domain, L: np.ndarray, U: np.ndarray, until: float) -> None:
        """Branch and bound on the box with the largest bound until the gap closes or ``until``;
        ``upper`` is the largest bound of the boxes still open (all others are below it)."""
        b = self.bound(domain, L, U)
        heap = [(-float(b[0].max()), 0, L[0], U[0], b[0])]
        closed = np.zeros(len(self.outputs))  # per output: the largest bound of boxes dropped
        counter = 1
        while heap and time.monotonic() < until:
            self._update(heap, closed)
            self.note()
            if self.result.upper <= self.result.lower * (1 + 1e-12) + 1e-12:
                break
            take = [heapq.heappop(heap) for _ in range(min(BATCH // 2, len(heap)))]
            Ls, Us = np.array([t[2] for t in take]), np.array([t[3] for t in take])
            points = np.all(Us <= Ls, axis=1)
            if points.any():  # single codes: exact values close them
                self.observe(domain.to_input(Ls[points], self.case))
                exact = self._exact(domain.to_input(Ls[points], self.case))
                closed = np.maximum(closed, exact.max(axis=0))
            Ls, Us = Ls[~points], Us[~points]
            if Ls.shape[0] == 0:
                continue
            parents = np.array([t[4] for t in take])[~points]
            self.observe(domain.to_input((Ls + Us) / 2, self.case))
            L2, U2 = domain.split(Ls, Us)  # children: the left halves, then the right halves
            # a part's bound may come out looser than its box's (other relaxations): keep the better
            b2 = np.minimum(self.bound(domain, L2, U2), np.vstack([parents, parents]))
            for k in range(L2.shape[0]):
                heapq.heappush(heap, (-float(b2[k].max()), counter, L2[k], U2[k], b2[k]))
                counter += 1
        self._update(heap, closed)

    def milp(self, domain, L: np.ndarray, U: np.ndarray) -> None:
        """The MILP's dual bound on each open output's maximum over the whole region (both signs),
        one solver per core at once, the remaining time shared between the batches of outputs
        whose gap is widest; it only ever lowers ``upper`` (a dual bound of max (±y_i − lower_i)
        is a certified bound of |y_i| − lower_i)."""
        from vnncomp_qeb.isolate import OK, run_isolated_all, usable_cores
        from vnncomp_qeb.milp.backends import backend_chain

        chain = backend_chain("highs")
        open_ = sorted((i for i in self.outputs if self.result.outputs[i][1] > self.result.outputs[i][0]),
                       key=lambda i: self.result.outputs[i][0] - self.result.outputs[i][1])
        jobs = [(i, sign) for i in open_ for sign in (1.0, -1.0)]
        side = {}  # (output, sign) -> certified bound of max sign·y_i
        cores = max(1, usable_cores())
        while jobs and chain:
            left = self.deadline - time.monotonic() - GRACE_S
            if left <= 1.0:
                break
            batch, jobs = jobs[:cores], jobs[cores:]
            until = time.monotonic() + left * len(batch) / (len(batch) + len(jobs))
            ts = [self.result.outputs[i][0] for i, _ in batch]
            calls = [(_milp_bound, (domain.analysis_graph, L[0], U[0], [_side(i, sign, t, self.m)],
                                    isinstance(domain, CodeDomain), until, chain)) for (i, sign), t in zip(batch, ts)]
            # the solver stops itself at ``until``; the watchdog allows for an overrun, and a child
            # it stops still hands over the last bound it reported
            results = run_isolated_all(calls, deadline=min(until + GRACE_S, self.deadline))
            for (i, sign), t, res in zip(batch, ts, results):
                if res.status != OK:
                    self.log(f"MILP on output {i} ({'+' if sign > 0 else '−'}): {res.status} {res.message}".rstrip())
                    if res.progress is None:
                        continue
                bound, points = res.value if res.status == OK else res.progress
                if points is not None:  # the solver's incumbents: replayed, they raise lower
                    self.observe(domain.to_input(points, self.case))
                if bound < np.inf:  # −inf: this sign never reaches t
                    side[(i, sign)] = t + bound
            for i in {i for i, _ in batch}:
                if (i, 1.0) in side and (i, -1.0) in side:  # both signs bounded: |y_i| is
                    self.result.outputs[i][1] = float(min(self.result.outputs[i][1],
                                                          max(side[(i, 1.0)], side[(i, -1.0)], self.result.outputs[i][0])))
            self.result.upper = float(max(self.result.outputs[j][1] for j in self.outputs))
            self.note()

    def _exact(self, x: np.ndarray) -> np.ndarray:
        """|N − Q| per output at single points, as onnxruntime computes it there: the quantity
        certified is onnxruntime's (deterministic at a point), so this closes the box exactly."""
        out = []
        for xi in x:
            xt = snap_into_box(xi, self.case.lower, self.case.upper, self.dtype)
            y = self._difference(joint_output(self.inst, xt)) if xt is not None else np.full(self.m, np.inf)
            out.append(np.abs(y[self.outputs]))
        return np.array(out)

    def _update(self, heap, closed) -> None:
        per = np.max([h[4] for h in heap], axis=0) if heap else np.zeros(len(self.outputs))
        per = np.maximum(per, closed)
        for k, i in enumerate(self.outputs):
            self.result.outputs[i][1] = float(max(per[k], self.result.outputs[i][0]))
        self.result.upper = float(max(self.result.outputs[i][1] for i in self.outputs))


def _milp_bound(graph, L, U, polys, integer_input, deadline, chain):
    """In a child: the MILP's certified bound of the largest slack of ``polys`` over the box, and
    the points (the solver's incumbents that reach the polytope, or None) for the parent to
    replay: they raise ``lower`` where onnxruntime confirms them."""
    from vnncomp_qeb.isolate import report
    from vnncomp_qeb.milp.solve import milp_box

    points = []
    bound = milp_box(graph, L, U, polys, integer_input=integer_input, deadline=deadline, chain=chain,
                     check=lambda p: points.append(p), search=False,
                     progress=lambda b: report((b, None))).bound  # kept if the watchdog stops it
    return bound, (np.vstack(points) if points else None)


def max_error(inst: Instance, timeout: float, seed: int = 0,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> MaxError:
    """The certified interval of max |N − Q| over the instance's region within ``timeout`` s."""
    start = time.monotonic()
    s = _Search(inst, start + max(timeout, 0.0), log, seed)
    domain = domain_for(inst.graph, s.dtype)
    L, U = domain.initial(s.case)
    s.falsify(domain, L, U)
    wide = int(np.sum(U[0] > L[0])) > MILP_DIMS
    # wide regions: branch and bound first, then the MILP's dual bounds on the open outputs
    s.refine(domain, L, U,
             time.monotonic() + SPLIT_SHARE * max(s.deadline - time.monotonic(), 0) if wide else s.deadline)
    if wide and not s.out_of_time() and s.result.upper > s.result.lower:
        s.milp(domain, L, U)
    s.result.time = time.monotonic() - start
    s.result.history.append((s.result.time, s.result.lower, s.result.upper))
    return s.result
