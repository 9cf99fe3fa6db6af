"""The verifier's schedule: falsify by sampling, then prove by branch and bound.

Each sub-box is bounded by intervals first and, where they fail, by the differential analysis
(:mod:`vnncomp_qeb.analysis.dra`). Honest by construction: ``unsat`` only when sound bounds
exclude every unsafe polytope on every sub-box; ``sat`` only with a witness that onnxruntime
reproduces on the original file(s).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vnncomp_qeb.analysis.dra import row_lower_bounds
from vnncomp_qeb.analysis.interval import output_bounds
from vnncomp_qeb.analysis.spec_check import case_excluded
from vnncomp_qeb.io.instance import Instance
from vnncomp_qeb.io.replay import Replay, replay
from vnncomp_qeb.io.results import SAT, TIMEOUT, UNKNOWN, UNSAT, counterexample
from vnncomp_qeb.search.domains import domain_for
from vnncomp_qeb.search.sampling import best_candidates, box_points
from vnncomp_qeb.spec import Case

BATCH = 2048  # boxes bounded at once
MAX_BOXES = 1_000_000  # open boxes kept before giving up (memory guard)
REPLAYS_PER_ROUND = 4
DRA_BATCH = 32  # most boxes per differential-analysis call
DRA_CALL_S = 0.25  # target seconds per call: the deadline is checked between calls


@dataclass
class Outcome:
    """A verdict with its evidence: the witness text and replay for ``sat``."""

    verdict: str
    witness: str | None = None
    replay: Replay | None = None
    stage: str = ""
    message: str = ""
    stats: dict = field(default_factory=dict)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Run:
    def __init__(self, inst: Instance, deadline: float, seed: int, log: Callable[[str], None]):
        self.inst = inst
        self.deadline = deadline
        self.rng = np.random.default_rng(seed)
        self.log = log
        self.replays = 0
        self.boxes = 0
        self.dra_box_s = 1.0  # measured seconds per box; the first call takes one box

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline

    def try_points(self, case: Case, points: np.ndarray, stage: str) -> Outcome | None:
        """Replay the most promising points; an Outcome when onnxruntime confirms one."""
        cand, margin = best_candidates(self.inst.graph, case, points, REPLAYS_PER_ROUND)
        scale = 1e-6 * (1.0 + np.abs(margin))
        for x, m in zip(cand, margin):
            if m < -scale.max():  # clearly safe under the reference semantics
                break
            self.replays += 1
            r = replay(self.inst, x)
            if r.ok:
                text = counterexample(self.inst.spec, r.x, r.y)
                return Outcome(SAT, text, r, stage, f"witness margin {r.margin:.3g}")
        return None

    def falsify(self, n: int) -> Outcome | None:
        for case in self.inst.spec.cases:
            found = self.try_points(case, box_points(case.lower, case.upper, n, self.rng), "sampling")
            if found or self.out_of_time():
                return found
        return None

    def dra_open(self, domain, case: Case, L: np.ndarray, U: np.ndarray) -> np.ndarray | None:
        """Which boxes the differential analysis cannot close (None when time ran out)."""
        A = np.vstack([p.A for p in case.polytopes])
        if A.shape[0] == 0:
            return np.ones(L.shape[0], dtype=bool)
        b = np.concatenate([p.b for p in case.polytopes])
        strict = np.concatenate([p.strict for p in case.polytopes])
        ends = np.cumsum([p.A.shape[0] for p in case.polytopes])
        open_ = np.ones(L.shape[0], dtype=bool)
        i = 0
        while i < L.shape[0]:
            if self.out_of_time():
                return None
            # size each call from the measured cost so the deadline is checked every ~0.25 s
            n = int(np.clip(DRA_CALL_S / self.dra_box_s, 1, DRA_BATCH))
            t0 = time.monotonic()
            rows = row_lower_bounds(domain.analysis_graph, L[i:i + n], U[i:i + n], A)
            self.dra_box_s = max((time.monotonic() - t0) / min(n, L.shape[0] - i), 1e-6)
            miss = np.where(strict, rows >= b, rows > b)  # the row cannot hold: polytope missed
            missed = np.stack([m.any(axis=1) for m in np.split(miss, ends[:-1], axis=1)], axis=1)
            open_[i:i + n] = ~missed.all(axis=1)
            i += n
        return open_

    def prove_case(self, case: Case) -> Outcome | None:
        """Interval branch and bound on one case; None when the case is proven safe."""
        domain = domain_for(self.inst.graph)
        stack = [domain.initial(case)]
        stuck = 0
        while stack:
            if self.out_of_time():
                return Outcome(TIMEOUT, stage="branch-and-bound", message="time budget spent")
            L, U = stack.pop()
            if L.shape[0] > BATCH:
                stack.append((L[BATCH:], U[BATCH:]))
                L, U = L[:BATCH], U[:BATCH]
            self.boxes += L.shape[0]
            lo, hi = output_bounds(domain.graph, L, U)
            open_ = ~case_excluded(case, lo, hi)
            if not open_.any():
                continue
            L, U = L[open_], U[open_]
            open_ = self.dra_open(domain, case, L, U)
            if open_ is None:
                stack.append((L, U))
                return Outcome(TIMEOUT, stage="branch-and-bound", message="time budget spent")
            if not open_.any():
                continue
            L, U = L[open_], U[open_]
            found = self.try_points(case, domain.to_input((L + U) / 2, case), "branch-and-bound")
            if found:
                return found
            points = np.all(U <= L, axis=1)
            stuck += int(points.sum())
            L, U = L[~points], U[~points]
            if L.shape[0] == 0:
                continue
            stack.append(domain.split(L, U))
            if sum(s[0].shape[0] for s in stack) > MAX_BOXES:
                return Outcome(UNKNOWN, stage="branch-and-bound", message="too many open boxes")
        if stuck:
            return Outcome(UNKNOWN, stage="branch-and-bound",
                           message=f"{stuck} single points could not be decided by interval bounds")
        return None


def verify(inst: Instance, timeout: float, seed: int = 0,
           log: Callable[[str], None] = _stderr) -> Outcome:
    """Decide the instance within ``timeout`` seconds (wall clock, from now)."""
    start = time.monotonic()
    run = _Run(inst, start + max(timeout, 0.0), seed, log)
    spec = inst.spec
    if not spec.cases:
        return Outcome(UNSAT, stage="spec", message="the unsafe set is empty")

    found = run.falsify(n=4096)
    log(f"[{time.monotonic() - start:7.3f}s] sampling: {'sat' if found else 'no witness'}")
    if found:
        found.stats = {"replays": run.replays, "time": time.monotonic() - start}
        return found
    if run.out_of_time():
        return Outcome(TIMEOUT, stage="sampling")

    result: Outcome | None = None
    undecided: Outcome | None = None  # a case that ended unknown: never unsat after it
    for i, case in enumerate(spec.cases):
        outcome = run.prove_case(case)
        log(f"[{time.monotonic() - start:7.3f}s] case {i + 1}/{len(spec.cases)}: "
            f"{outcome.verdict if outcome else 'proven safe'} ({run.boxes} boxes)")
        if outcome is None:
            continue
        if outcome.verdict == UNKNOWN:
            undecided = outcome
            continue
        result = outcome  # sat or timeout ends the run
        break
    if result is None:
        result = undecided or Outcome(UNSAT, stage="branch-and-bound",
                                      message="sound bounds exclude every unsafe set")
    result.stats = {"boxes": run.boxes, "replays": run.replays, "time": time.monotonic() - start}
    return result
