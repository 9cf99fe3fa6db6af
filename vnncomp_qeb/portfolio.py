"""The verifier's schedule: falsify, bound, split, then MILP, inside one time budget.

Stages (each logs one line on stderr: time, stage, outcome):
1. falsification — batched sampling of the case boxes, then gradient ascent from the best
   samples (:mod:`vnncomp_qeb.search.attack`);
2. branch and bound — interval bounds, then the differential analysis
   (:mod:`vnncomp_qeb.analysis.dra`) on batches of sub-boxes, attacking box centres; the root
   box's DRA is the first step, so a property the DRA proves is answered here;
3. MILP — when the input has too many free dimensions for splitting to finish, the rest of the
   budget goes to one MILP over the case's box (:mod:`vnncomp_qeb.milp`), run in a child process
   under a time and memory watchdog (:mod:`vnncomp_qeb.isolate`).

Honest by construction: ``unsat`` only when every case is proven by sound bounds or the MILP's
dual bound; ``sat`` only with a witness that onnxruntime reproduces on the original file(s).
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
from vnncomp_qeb.io.replay import Replay, input_type, replay
from vnncomp_qeb.io.results import SAT, TIMEOUT, UNKNOWN, UNSAT, counterexample
from vnncomp_qeb.isolate import CANCELLED, OK, OUT_OF_TIME, report, run_isolated_all, usable_cores
from vnncomp_qeb.milp.backends import backend_chain
from vnncomp_qeb.milp.solve import milp_box
from vnncomp_qeb.search.attack import pgd
from vnncomp_qeb.search.moves import iterated_search
from vnncomp_qeb.search.domains import CodeDomain, domain_for
from vnncomp_qeb.search.sampling import best_candidates, box_points
from vnncomp_qeb.spec import Case

BATCH = 2048  # boxes bounded at once
MAX_BOXES = 1_000_000  # open boxes kept before giving up (memory guard)
REPLAYS_PER_ROUND = 4
DRA_BATCH = 32  # most boxes per differential-analysis call
DRA_CALL_S = 0.25  # target seconds per call: the deadline is checked between calls
SPLIT_DIMS = 12  # inputs with more free dimensions than this get the MILP after a short split
SPLIT_SHARE = 0.04  # share of the remaining budget the split gets before the MILP takes over
SAMPLES, ATTACK_STARTS, ATTACK_STEPS = 4096, 8, 20
LOCAL_STARTS = 16  # best falsifier points the local search may start from
SEARCH_SHARE = 0.05  # most of the budget the local search over the input grid may take
SEEDS_PER_POLYTOPE = 8  # falsifier points handed to the MILP's witness search
HELPER_MIN_S = 5.0  # least time left for a freed core to start a witness-search helper


@dataclass
class Outcome:
    """A verdict with its evidence: the witness text and replay for ``sat``."""

    verdict: str
    witness: str | None = None
    replay: Replay | None = None
    stage: str = ""
    message: str = ""
    stats: dict = field(default_factory=dict)


@dataclass
class Settings:
    """Knobs of one run (the command line sets them)."""

    backend: str = "highs"
    memory_mb: float | None = None  # cap of the MILP children together; None: 75 % of what is free
    milp_workers: int | None = None  # MILP children at once; None: one per usable core
    verbose: bool = False
    milp: bool = True
    stream: bool = False  # MILP children write their progress to stderr as it happens
    ray: bool = False  # a Ray runtime is connected: MILP shares and DRA batches run on its workers


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


MILP_DEADLINE_ARG = 6  # position of ``deadline`` among _milp_child's arguments (rebased on Ray workers)


def _milp_child(graph, domain, case: Case, L, U, integer_input, deadline, backend, verbose, starts, seed,
                prove=True, t0=None, tag="", whole: Case | None = None):
    """In the child: the MILP over one box; candidate witnesses are screened by the reference
    evaluator and sent back for the parent to replay in onnxruntime. ``starts``: the falsifier's
    best input points, where the witness search begins; ``prove=False``: the search alone;
    ``whole``: the case ``case`` is a share of (its local search hunts witnesses of any polytope).
    Progress goes to stderr as it happens (each polytope's outcome; every line with --verbose)."""
    whole = whole or case

    def screen(points):
        x = domain.to_input(points, whole)
        y = domain.graph.evaluate(points) if integer_input else graph.evaluate(x)
        return x if whole.margin(y)[0] >= -1e-9 * (1 + np.abs(y).max()) else None

    lines: list[str] = []  # not streaming: the parent logs them when the child is done

    def log(line: str) -> None:
        if not (verbose or line.startswith(_PROGRESS)):
            return
        if t0 is None:
            lines.append(line)
        else:
            _stderr(f"[{time.monotonic() - t0:7.3f}s] milp: {tag}{line}")

    res = milp_box(domain.analysis_graph, L, U, case.polytopes, integer_input=integer_input, deadline=deadline,
                   chain=backend_chain(backend), check=screen, log=log,
                   starts=None if starts is None else domain.from_input(starts), seed=seed, prove=prove,
                   progress=report, hunt=whole.polytopes)
    return res.proven, res.found, res.bound, lines


# the MILP's progress lines shown without --verbose: each polytope's outcome, the search's start
# and a witness it finds
_PROGRESS = ("polytope", "witness search on", "neighbourhood search: witness", "local search: witness")


class _Run:
    def __init__(self, inst: Instance, deadline: float, seed: int, log: Callable[[str], None], settings: Settings):
        self.inst = inst
        self.deadline = deadline
        self.rng = np.random.default_rng(seed)
        self.log = log
        self.settings = settings
        self.replays = 0
        self.boxes = 0
        self.milp_calls = 0
        self.dra_box_s = 1.0  # measured seconds per box; the first call takes one box
        self.seed = seed
        self.best_points: dict[int, np.ndarray] = {}  # per case (by id): the falsifier's best inputs
        self.certified: dict[int, float] = {}  # per case (by id): the tightest certified slack bound
        self.start = time.monotonic()

    def say(self, stage: str, what: str) -> None:
        self.log(f"[{time.monotonic() - self.start:7.3f}s] {stage}: {what}")

    def out_of_time(self, until: float | None = None) -> bool:
        return time.monotonic() >= min(self.deadline, until or np.inf)

    def try_points(self, case: Case, points: np.ndarray, stage: str) -> Outcome | None:
        """Replay the most promising points; an Outcome when onnxruntime confirms one."""
        cand, margin = best_candidates(self.inst.graph, case, points, REPLAYS_PER_ROUND)
        scale = _reference_gap(self.inst.graph) * (1.0 + np.abs(margin))
        for x, m in zip(cand, margin):
            if m < -scale.max():  # clearly safe under the reference semantics
                break
            found = self.confirm(x, stage)
            if found:
                return found
        return None

    def confirm(self, x: np.ndarray, stage: str) -> Outcome | None:
        return self.sat_if_replayed(self.replay(x), stage)

    def replay(self, x: np.ndarray) -> Replay:
        self.replays += 1
        return replay(self.inst, x)

    def sat_if_replayed(self, r: Replay, stage: str) -> Outcome | None:
        """``sat`` with the witness text when onnxruntime confirmed the violation."""
        if not r.ok:
            return None
        return Outcome(SAT, counterexample(self.inst.spec, r.x, r.y), r, stage, f"witness margin {r.margin:.3g}")

    def falsify(self) -> Outcome | None:
        domain = domain_for(self.inst.graph, input_type(self.inst))
        for k, case in enumerate(self.inst.cases):
            points = box_points(case.lower, case.upper, SAMPLES, self.rng)
            found = self.try_points(case, points, "sampling")
            if found or self.out_of_time():
                return found
            starts, _ = best_candidates(self.inst.graph, case, points, ATTACK_STARTS)
            visited = pgd(self.inst.graph, case, starts, ATTACK_STEPS, self.rng)
            found = self.try_points(case, visited, "attack")
            if found or self.out_of_time():
                return found
            # exact-margin local search over the input grid (sees through rounding), in codes
            # where the input is snapped; not where the DRA over the whole box proves the case
            L, U = domain.initial(case)
            try:
                self.certified[id(case)] = self.root_slack_bound(domain, case, L, U)
            except Exception:  # noqa: BLE001 - the proof stage meets it again and reports it
                pass
            if self.certified.get(id(case), np.inf) >= 0:
                starts = domain.from_input(best_candidates(self.inst.graph, case, visited, LOCAL_STARTS)[0])
                share = SEARCH_SHARE * (self.deadline - time.monotonic()) / (len(self.inst.cases) - k)
                x, _, found = iterated_search(
                    domain.graph, case.margin, starts, L[0], U[0], isinstance(domain, CodeDomain),
                    time.monotonic() + share, self.rng,
                    lambda points: self.try_points(case, domain.to_input(points, case), "attack"))
                if found or self.out_of_time():
                    return found
                visited = np.vstack([visited, domain.to_input(x[None], case)])
            # the best points for each unsafe polytope: where the MILP's witness search starts
            y = self.inst.graph.evaluate(visited)
            top = [np.argsort(-p.margin(y))[:SEEDS_PER_POLYTOPE] for p in case.polytopes]
            self.best_points[id(case)] = visited[np.unique(np.concatenate(top))] if top else visited[:0]
        return None

    def dra_open(self, domain, case: Case, L: np.ndarray, U: np.ndarray, until: float):
        """Which boxes the differential analysis cannot close, and for each box a split score per
        input (:func:`_split_score` × the input's width; ReluVal's smear, on the difference);
        None when time ran out."""
        A = np.vstack([p.A for p in case.polytopes])
        if A.shape[0] == 0:  # nothing to bound: every box open, split the widest side
            return np.ones(L.shape[0], dtype=bool), np.zeros(L.shape)
        b = np.concatenate([p.b for p in case.polytopes])
        strict = np.concatenate([p.strict for p in case.polytopes])
        ends = np.cumsum([p.A.shape[0] for p in case.polytopes])
        open_ = np.ones(L.shape[0], dtype=bool)
        score = np.zeros(L.shape)
        i = 0
        remote = self.remote_dra(domain)
        while i < L.shape[0]:
            if self.out_of_time(until):
                return None
            # size each call from the measured cost so the deadline is checked every ~0.25 s
            n = int(np.clip(DRA_CALL_S / self.dra_box_s, 1, DRA_BATCH))
            t0 = time.monotonic()
            coeffs: list = []
            if remote is None:
                rows = row_lower_bounds(domain.analysis_graph, L[i:i + n], U[i:i + n], A, coeffs)
            else:  # one chunk per worker, each the size one process handles in DRA_CALL_S
                n *= remote.workers
                rows, c = remote.rows(L[i:i + n], U[i:i + n], A)
                coeffs.append(c)
            self.dra_box_s = max((time.monotonic() - t0) / min(n, L.shape[0] - i), 1e-6) * (
                1 if remote is None else remote.workers)
            miss = np.where(strict, rows >= b, rows > b)  # the row cannot hold: polytope missed
            missed = np.stack([m.any(axis=1) for m in np.split(miss, ends[:-1], axis=1)], axis=1)
            open_[i:i + n] = ~missed.all(axis=1)
            score[i:i + n] = _split_score(rows - b, ends, missed, coeffs[0]) * (U[i:i + n] - L[i:i + n])
            i += n
        return open_, score

    def remote_dra(self, domain):
        """The cluster's DRA for this domain's graph (shipped once), or None without Ray."""
        if not self.settings.ray:
            return None
        if getattr(self, "_remote", (None, None))[0] is not domain.analysis_graph:
            from vnncomp_qeb.cluster.remote_calls import RemoteDRA

            self._remote = (domain.analysis_graph, RemoteDRA(domain.analysis_graph))
        return self._remote[1]

    def split(self, domain, case: Case, until: float) -> Outcome | None:
        """Branch and bound on one case until ``until``; None when the case is proven safe."""
        stack = [domain.initial(case)]
        stuck, first_stuck = 0, None
        while stack:
            if self.out_of_time(until):
                return Outcome(TIMEOUT, stage="branch-and-bound", message="time share spent")
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
            got = self.dra_open(domain, case, L, U, until)
            if got is None:
                return Outcome(TIMEOUT, stage="branch-and-bound", message="time share spent")
            open_, score = got
            if not open_.any():
                continue
            L, U, score = L[open_], U[open_], score[open_]
            found = self.try_points(case, domain.to_input((L + U) / 2, case), "branch-and-bound")
            if found:
                return found
            points = np.all(U <= L, axis=1)
            if points.any():
                found, undecided = self.decide_points(domain, case, L[points])
                if found:
                    return found
                stuck += len(undecided)
                first_stuck = first_stuck if first_stuck is not None or not undecided else undecided[0]
            L, U = L[~points], U[~points]
            if L.shape[0] == 0:
                continue
            stack.append(domain.split(L, U, score[~points]))
            if sum(s[0].shape[0] for s in stack) > MAX_BOXES:
                return Outcome(UNKNOWN, stage="branch-and-bound", message="too many open boxes")
        if stuck:
            return Outcome(UNKNOWN, stage="branch-and-bound",
                           message=f"{stuck} single input point(s) where onnxruntime is safe but the tie "
                                   f"band of a rounding step keeps a violation possible, e.g. x = "
                                   f"{np.array2string(first_stuck, precision=6, threshold=12)}")
        return None

    def decide_points(self, domain, case: Case, points: np.ndarray) -> tuple[Outcome | None, list]:
        """Single input points the bounds could not decide, decided exactly where possible:
        onnxruntime violates → ``sat``; onnxruntime and the exact arithmetic (the reference
        evaluator) both safe by more than its float error → safe. What is left (a near-tie that
        another rounding of a fused kernel could flip) is returned undecided."""
        x = domain.to_input(points, case)
        undecided = []
        for xi, ref in zip(x, case.margin(self.inst.graph.evaluate(x))):
            r = self.replay(xi)  # onnxruntime once: a witness, or its best margin over the boxes
            found = self.sat_if_replayed(r, "branch-and-bound")
            if found:
                return found, []
            tol = _reference_gap(self.inst.graph) * (1.0 + abs(ref))
            if not (r.case >= 0 and r.margin < 0 and ref < -tol):  # r.case < 0: in no box as its type
                undecided.append(xi)
        return None, undecided

    def milp(self, domain, case: Case) -> Outcome | None:
        """The MILP over the case's box in watched children, the unsafe polytopes dealt out to
        one child per core (a case is proven when every child proves its share); None when it
        proves the case."""
        L, U = domain.initial(case)
        integer_input = isinstance(domain, CodeDomain)
        # the solver stops a second (+2 %) early: HiGHS can overrun its limit in presolve, and a
        # child the watchdog kills reports no bound; the watchdog leaves 0.1 s to write the answer
        deadline = self.deadline - 1.0 - 0.02 * max(self.deadline - time.monotonic(), 0.0)
        self.milp_calls += 1
        if self.settings.ray:
            from vnncomp_qeb.cluster.remote_calls import cluster_cpus, run_remote_all

            cores = cluster_cpus()
            runner = lambda calls, **kw: run_remote_all(calls, deadline_arg=MILP_DEADLINE_ARG, **kw)  # noqa: E731
        else:
            cores, runner = usable_cores(), run_isolated_all
        workers = max(1, min(len(case.polytopes), self.settings.milp_workers or cores))
        shares = [Case(case.lower, case.upper, case.polytopes[k::workers]) for k in range(workers)]
        starts = self.best_points.get(id(case))

        def call(share: Case, seed: int, prove: bool = True, tag: str = ""):
            return (_milp_child, (self.inst.graph, domain, share, L[0], U[0], integer_input, deadline,
                                  self.settings.backend, self.settings.verbose, starts, seed, prove,
                                  self.start if self.settings.stream and not self.settings.ray else None, tag, case))

        def refill(results):
            # a share proven early frees its core: a helper searches the open shares for witnesses
            # (one per freed core: a helper that dies is not replaced)
            open_ = [p for k in range(workers) if results[k] is None for p in shares[k].polytopes]
            freed = sum(r is not None for r in results[:workers]) - (len(results) - workers)
            if not open_ or freed <= 0 or deadline - time.monotonic() < HELPER_MIN_S:
                return None
            return call(Case(case.lower, case.upper, open_), self.seed + len(results), prove=False,
                        tag=f"[helper {len(results) + 1 - workers}] ")

        # a candidate witness settles the case (if onnxruntime confirms it, checked below)
        results = runner([call(share, self.seed + k, tag=f"[{k + 1}/{workers}] " if workers > 1 else "")
                                    for k, share in enumerate(shares)],
                                   deadline=self.deadline - 0.1, memory_mb=self.settings.memory_mb,
                                   enough=lambda r: r.status == OK and r.value[1] is not None, refill=refill)
        proven, bound = True, -np.inf
        failed = None
        for k, iso in enumerate(results):
            helper = k >= workers  # its witness counts, its (absent) proof does not
            tag = f"[helper {k + 1 - workers}] " if helper else f"[{k + 1}/{workers}] " if workers > 1 else ""
            if iso.status != OK:
                if iso.status != CANCELLED:
                    self.say("milp", f"{tag}{iso.status} ({iso.message.strip().splitlines()[0] if iso.message else ''}, "
                                     f"peak {iso.peak_mb:.0f} MB)")
                    failed = failed or (None if helper else iso.status)
                if not helper:  # its last reported bound still holds (inf if it reported none)
                    proven = False
                    bound = max(bound, np.inf if iso.progress is None else iso.progress)
                continue
            share_proven, found, share_bound, lines = iso.value
            for line in lines:
                self.say("milp", tag + line)
            if not helper:
                proven &= share_proven
                bound = max(bound, share_bound)
            if found is not None:
                hit = self.confirm(found[0], "milp")
                if hit:
                    return hit
                self.say("milp", "candidate not confirmed by onnxruntime")
        if proven:
            return None
        self.certified[id(case)] = min(self.certified.get(id(case), np.inf), bound)
        if failed and failed != OUT_OF_TIME:
            return Outcome(UNKNOWN, stage="milp", message=failed)
        verdict = TIMEOUT if self.out_of_time() or time.monotonic() > deadline - 0.05 else UNKNOWN
        return Outcome(verdict, stage="milp", message="the MILP did not close the case")

    def root_slack_bound(self, domain, case: Case, L: np.ndarray, U: np.ndarray) -> float:
        """Sound upper bound of how far into the unsafe set any input of the case's box gets (its
        largest polytope slack ``min_k b_k − A_k·y``), from the DRA over the whole box: a
        deterministic certificate every timeout reports (the MILP may lower it)."""
        if not case.polytopes or any(p.A.shape[0] == 0 for p in case.polytopes):
            return np.inf
        rows = row_lower_bounds(domain.analysis_graph, L, U, np.vstack([p.A for p in case.polytopes]))[0]
        ends = np.cumsum([p.A.shape[0] for p in case.polytopes])
        b = np.concatenate([p.b for p in case.polytopes])
        return float(max(np.min(part) for part in np.split(b - rows, ends[:-1])))

    def prove_case(self, case: Case) -> Outcome | None:
        """Split first; hand wide boxes to the MILP after the split's share."""
        domain = domain_for(self.inst.graph, input_type(self.inst))
        L, U = domain.initial(case)
        if id(case) not in self.certified:  # (falsification computed it)
            self.certified[id(case)] = self.root_slack_bound(domain, case, L, U)
        free = int(np.sum(U[0] > L[0]))
        use_milp = self.settings.milp and free > SPLIT_DIMS and backend_chain(self.settings.backend)
        until = (time.monotonic() + SPLIT_SHARE * (self.deadline - time.monotonic())) if use_milp else self.deadline
        outcome = self.split(domain, case, until)
        self.say("branch-and-bound", f"{outcome.verdict if outcome else 'proven safe'} ({self.boxes} boxes, "
                                     f"{free} free inputs)")
        if outcome is None or outcome.verdict == SAT or not use_milp or self.out_of_time():
            return outcome
        outcome = self.milp(domain, case)
        self.say("milp", outcome.verdict if outcome else "proven safe")
        return outcome


def _reference_gap(graph) -> float:
    """How far (relative) onnxruntime may be from the reference evaluator: float32 rounding, or —
    with float16/bfloat16 ops, whose casts onnxruntime may round or elide — their rounding."""
    if not hasattr(graph, "_reference_gap"):
        reduced = any(op.precision in ("float16", "bfloat16") for op in graph.ops)
        graph._reference_gap = 1e-2 if reduced else 1e-6
    return graph._reference_gap


def certified_text(slack: float, case: Case, index) -> str:
    """The certified slack bound in words, and as a bound on |N − Q| for error-bound properties
    (every polytope one row ``±y_i ≥ ε``)."""
    where = f" in case {index + 1}" if index else ""
    text = f"certified{where}: no input gets deeper than {slack:.6g} into the unsafe set (largest polytope slack)"
    rows = [(p.A[0], p.b[0]) for p in case.polytopes if p.A.shape[0] == 1]
    if len(rows) == len(case.polytopes) and rows:
        unit = all(np.count_nonzero(a) == 1 and abs(a[np.flatnonzero(a)[0]]) == 1 for a, _ in rows)
        eps = {-float(b) for _, b in rows}
        if unit and len(eps) == 1 and min(eps) > 0:
            outs = sorted({int(np.flatnonzero(a)[0]) for a, _ in rows})
            text += f", i.e. |N − Q|_i ≤ {min(eps) + slack:.6g} for i in {outs}"
    return text


def _split_score(margin: np.ndarray, ends: np.ndarray, missed: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """(B, n) split score per input before the width factor: over the open unsafe polytopes, the
    |input coefficients| of each one's row closest to excluding it, weighted by how far that row
    still is (``margin`` = row lower bound − b, (B, rows)). Weighting every open polytope, not
    only the worst, took N2_1 prop 6a of acasxu_f16 from > 300 s to 40 s."""
    starts = np.concatenate([[0], ends[:-1]])
    best_row = np.stack([s + np.argmax(margin[:, s:e], axis=1) for s, e in zip(starts, ends)], axis=1)
    gap = np.maximum(-np.take_along_axis(margin, best_row, axis=1), 0.0)  # (B, polytopes)
    gap = np.where(missed, 0.0, gap)
    picked = np.take_along_axis(np.abs(coeffs), best_row[:, :, None], axis=1)  # (B, polytopes, n)
    return np.einsum("bp,bpn->bn", gap, picked)


def verify(inst: Instance, timeout: float, seed: int = 0, log: Callable[[str], None] = _stderr,
           settings: Settings | None = None) -> Outcome:
    """Decide the instance within ``timeout`` seconds (wall clock, from now)."""
    start = time.monotonic()
    run = _Run(inst, start + max(timeout, 0.0), seed, log, settings or Settings())
    cases = inst.cases
    if not cases:
        return Outcome(UNSAT, stage="spec", message="the unsafe set is empty")

    found = run.falsify()
    run.say("falsification", f"{'sat' if found else 'no witness'} ({run.replays} replays)")
    if found:
        found.stats = {"replays": run.replays, "time": time.monotonic() - start}
        return found
    if run.out_of_time():
        return Outcome(TIMEOUT, stage="falsification")

    result: Outcome | None = None
    undecided: Outcome | None = None  # a case that ended unknown: never unsat after it
    for i, case in enumerate(cases):
        outcome = run.prove_case(case)
        run.say(f"case {i + 1}/{len(cases)}", outcome.verdict if outcome else "proven safe")
        if outcome is None:
            continue
        if outcome.verdict in (TIMEOUT, UNKNOWN) and id(case) in run.certified:
            outcome.message += "; " + certified_text(run.certified[id(case)], case, len(cases) > 1 and i)
        if outcome.verdict == UNKNOWN:
            undecided = outcome
            continue
        result = outcome  # sat or timeout ends the run
        break
    if result is None:
        result = undecided or Outcome(UNSAT, stage="branch-and-bound" if not run.milp_calls else "milp",
                                      message="sound bounds exclude every unsafe set")
    result.stats = {"boxes": run.boxes, "replays": run.replays, "milp_calls": run.milp_calls,
                    "time": time.monotonic() - start}
    return result
