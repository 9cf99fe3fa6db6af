"""MILP back-ends behind one interface: HiGHS (default), SCIP, Gurobi (full licence only).

``solve`` maximises the model's objective within a time limit and stops early once the answer
is known: the dual bound fell below ``stop_below`` (the property is proven on this model) or an
incumbent reached ``stop_above`` (a candidate witness), or (``give_up``, HiGHS) a proof that
cannot finish hands its time to the witness search: past its time share, or once the dual bound
has stalled (even three times its recent rate would not bring it below ``stop_below`` within the
time limit) — but only while the bound is above the share's ``keep_below``. Another thread may
interrupt a solve through ``stop`` (a :class:`threading.Event`).

A ``cutoff`` tells the solver that only points with an objective above it matter (a proof needs
no incumbent below its target): it prunes every node whose bound is at or below it and runs no
primal heuristics for incumbents below it. Measured on the QEBVerif twins (P2-4 id3236 ε = 6, one
core): the proof model with a cutoff just below 0 and no heuristics closes in 42 s (strong
branching fixes codes whose other side falls below the cutoff); without them the bound is still
0.17 at 60 s (HiGHS's feasibility pump alone took 20 s). The returned bound is then
``max(dual bound, cutoff)``: what the solver pruned is only known to lie at or below the cutoff.
"""

from __future__ import annotations

import bisect
import importlib.util
import threading
import time
from dataclasses import dataclass

import numpy as np

from vnncomp_qeb.milp.model import MilpModel

OPTIMAL, INFEASIBLE, TIME_LIMIT, INTERRUPTED, ERROR = "optimal", "infeasible", "time_limit", "interrupted", "error"
INT_TOL = 1e-9  # integrality tolerance asked of Gurobi (HiGHS and SCIP: feasibility 1e-7)
STALL_MIN_S, STALL_SHARE, STALL_RATE = 4.0, 0.25, 3.0  # see :func:`bound_stalled`


@dataclass
class MilpResult:
    """What a solve established: ``bound`` ≥ every feasible objective value (−inf when the
    model is infeasible, +inf when nothing is known); ``objective``/``x`` the best point found."""

    status: str
    bound: float
    objective: float | None = None
    x: np.ndarray | None = None
    seconds: float = 0.0
    backend: str = ""
    message: str = ""


@dataclass
class GiveUp:
    """When a proof may hand its time over (see the module docstring): after ``share_until``
    (monotonic seconds) or on a stall, while its dual bound is above ``keep_below``."""

    share_until: float
    keep_below: float = -np.inf


class Backend:
    """Interface of a MILP solver."""

    name = "none"
    module = ""  # the Python package the back-end needs

    @classmethod
    def available(cls) -> bool:
        return bool(cls.module) and importlib.util.find_spec(cls.module) is not None

    def solve(self, model: MilpModel, time_limit: float, threads: int = 1,
              start: tuple[np.ndarray, np.ndarray] | None = None,
              stop: threading.Event | None = None, stop_below: float = -np.inf,
              stop_above: float = np.inf, give_up: GiveUp | None = None,
              cutoff: float = -np.inf) -> MilpResult:  # pragma: no cover - interface
        """``start``: values ``(columns, values)`` for some columns (the inputs of a candidate
        point); the solver completes them into its first incumbent when it can. Back-ends
        without an adaptive ``give_up`` stop at its ``share_until``."""
        raise NotImplementedError


class HighsBackend(Backend):
    """HiGHS through ``highspy``; early stops and interruption via its MIP callback."""

    name = "highs"
    module = "highspy"

    def solve(self, model, time_limit, threads=1, start=None, stop=None, stop_below=-np.inf, stop_above=np.inf,
              give_up=None, cutoff=-np.inf):
        import highspy

        t0 = time.monotonic()
        # a cutoff is passed as ``objective_bound`` of a minimisation: HiGHS 1.15 ignores it when
        # maximising; sign turns every objective value HiGHS reports back into ours
        cut = bool(np.isfinite(cutoff))
        sign = -1.0 if cut else 1.0
        integer = model.integrality()
        h = highs_model(model, sign * model.cost(), sign * model.offset, minimise=cut)
        h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
        # witnesses need integrality within 1e-7; a proof (a cutoff) does not: a node closed at its
        # LP value bounds every integer point in it whatever the tolerance, and HiGHS's default
        # 1e-6 proves P2 Q4 id3236 ε = 6 in 26 s instead of 40 s
        h.setOptionValue("mip_feasibility_tolerance", 1e-6 if cut else 1e-7)
        h.setOptionValue("random_seed", 0)
        lb, ub = model.bounds()
        if cut:  # (heuristics: incumbents below the cutoff are of no use)
            h.setOptionValue("objective_bound", -float(cutoff))
            h.setOptionValue("mip_heuristic_effort", 0.0)
            for name in ("feasibility_jump", "rins", "rens", "root_reduced_cost"):
                h.setOptionValue(f"mip_heuristic_run_{name}", False)
        if start is not None and integer.any():
            idx, val = _partial(start, lb, ub)
            h.setSolution(idx.size, idx.astype(np.int32), val)  # HiGHS completes a partial start
        decided = {"why": ""}
        trace: list[tuple[float, float]] = []  # (seconds, dual bound) while finite

        def check(e):
            out = e.data_out
            t = time.monotonic() - t0
            dual = max(sign * out.mip_dual_bound, cutoff)
            if give_up is not None and np.isfinite(dual):  # only the stall rule reads it
                trace.append((t, dual))
            hand_over = give_up is not None and dual > give_up.keep_below
            if stop is not None and stop.is_set():
                decided["why"] = "interrupted"
            elif t > time_limit:  # HiGHS's own limit can be overrun
                decided["why"] = "time"
            elif dual < stop_below:
                decided["why"] = "bound"
            elif sign * out.mip_primal_bound >= stop_above:
                decided["why"] = "incumbent"
            elif hand_over and time.monotonic() > give_up.share_until:
                decided["why"] = "share"
            elif hand_over and bound_stalled(trace, stop_below, time_limit):
                decided["why"] = "stalled"
            if decided["why"]:
                e.data_in.user_interrupt = True

        if integer.any():
            h.cbMipInterrupt.subscribe(check)
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        seconds = time.monotonic() - t0
        pruned = (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kObjectiveBound)
        if cut and status in pruned:
            return _nothing_above(cutoff, seconds, self.name)
        if status == highspy.HighsModelStatus.kInfeasible:
            return MilpResult(INFEASIBLE, -np.inf, seconds=seconds, backend=self.name)
        if status == highspy.HighsModelStatus.kOptimal:
            kind = OPTIMAL
        elif status == highspy.HighsModelStatus.kTimeLimit:
            kind = TIME_LIMIT
        elif status == highspy.HighsModelStatus.kInterrupt:
            kind = INTERRUPTED
        else:
            return MilpResult(ERROR, np.inf, seconds=seconds, backend=self.name, message=h.modelStatusToString(status))
        has_point = info.primal_solution_status == 2  # kSolutionStatusFeasible
        x = np.asarray(h.getSolution().col_value) if has_point else None
        obj = sign * info.objective_function_value if has_point else None
        if integer.any():
            bound = sign * info.mip_dual_bound
        else:
            bound = obj if kind == OPTIMAL else np.inf
        if kind == OPTIMAL and obj is not None:
            bound = max(bound, obj) if np.isfinite(bound) else obj
        # with a cutoff HiGHS reports the bound of what it kept (at the end: its incumbent, even
        # one below the cutoff): what it pruned is only known to lie at or below the cutoff
        return MilpResult(kind, float(max(bound, cutoff)), obj, x, seconds, self.name, decided["why"])


def highs_model(model: MilpModel, cost: np.ndarray, offset: float = 0.0, *, minimise: bool = False,
                integer: bool = True):
    """A quiet ``highspy.Highs`` holding ``model`` with objective ``cost``·x + ``offset`` (its
    integrality kept when ``integer``, else its LP relaxation)."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    lp = highspy.HighsLp()
    lb, ub = model.bounds()
    starts, index, value, rlo, rhi = model.rows()
    lp.num_col_, lp.num_row_ = model.n_vars, model.n_rows
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = np.asarray(cost, dtype=np.float64), lb, ub
    lp.row_lower_, lp.row_upper_ = rlo, rhi
    lp.sense_ = highspy.ObjSense.kMinimize if minimise else highspy.ObjSense.kMaximize
    lp.offset_ = offset
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = model.n_vars, model.n_rows
    lp.a_matrix_.start_ = np.append(starts, index.size).astype(np.int32)
    lp.a_matrix_.index_, lp.a_matrix_.value_ = index.astype(np.int32), value
    ints = model.integrality()
    if integer and ints.any():
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in ints]
    h.passModel(lp)
    return h


class ScipBackend(Backend):
    """SCIP through ``pyscipopt`` (optional)."""

    name = "scip"
    module = "pyscipopt"

    def solve(self, model, time_limit, threads=1, start=None, stop=None, stop_below=-np.inf, stop_above=np.inf,
              give_up=None, cutoff=-np.inf):
        import pyscipopt

        t0 = time.monotonic()
        time_limit = _within_share(time_limit, give_up, t0)
        m = pyscipopt.Model()
        m.hideOutput()
        m.setParam("limits/time", float(max(time_limit, 0.01)))
        m.setParam("numerics/feastol", 1e-7)
        lb, ub = model.bounds()
        integer = model.integrality()
        inf = m.infinity()
        xs = [m.addVar(lb=max(l, -inf), ub=min(u, inf), vtype="I" if i else "C")
              for l, u, i in zip(lb.tolist(), ub.tolist(), integer.tolist())]
        for cols, vals, lo, hi in model.iter_rows():
            expr = pyscipopt.quicksum(v * xs[j] for j, v in zip(cols, vals))
            if lo == hi:
                m.addCons(expr == lo)
                continue
            if np.isfinite(lo):
                m.addCons(expr >= lo)
            if np.isfinite(hi):
                m.addCons(expr <= hi)
        cost = model.cost()
        nz = np.flatnonzero(cost)
        m.setObjective(pyscipopt.quicksum(cost[j] * xs[j] for j in nz.tolist()) + model.offset, "maximize")
        if np.isfinite(cutoff):
            m.setObjlimit(float(cutoff))
        if start is not None:
            sol = m.createPartialSol()
            for j, v in zip(*(a.tolist() for a in _partial(start, lb, ub))):
                m.setSolVal(sol, xs[j], v)
            m.addSol(sol)
        watcher = _Watcher(stop, m.interruptSolve)
        m.optimize()
        watcher.done()
        seconds = time.monotonic() - t0
        st = m.getStatus()
        if st == "infeasible":
            if np.isfinite(cutoff):  # (nothing above the objective limit)
                return _nothing_above(cutoff, seconds, self.name)
            return MilpResult(INFEASIBLE, -np.inf, seconds=seconds, backend=self.name)
        kind = {"optimal": OPTIMAL, "timelimit": TIME_LIMIT, "userinterrupt": INTERRUPTED}.get(st)
        if kind is None:
            return MilpResult(ERROR, np.inf, seconds=seconds, backend=self.name, message=st)
        best = m.getBestSol() if m.getNSols() else None
        x = np.array([m.getSolVal(best, v) for v in xs]) if best is not None else None
        obj = m.getSolObjVal(best) if best is not None else None
        return MilpResult(kind, float(max(m.getDualbound(), cutoff)), obj, x, seconds, self.name)


class GurobiBackend(Backend):
    """Gurobi through ``gurobipy``, used only with a licence that takes the model: the pip
    licence's size limit (error 10010 at optimize) makes ``solve`` return ``error`` so the
    caller falls back to the next back-end."""

    name = "gurobi"
    SIZE_LIMIT = 10010
    module = "gurobipy"

    def solve(self, model, time_limit, threads=1, start=None, stop=None, stop_below=-np.inf, stop_above=np.inf,
              give_up=None, cutoff=-np.inf):
        import gurobipy as gp

        t0 = time.monotonic()
        time_limit = _within_share(time_limit, give_up, t0)
        try:
            env = gp.Env(params={"OutputFlag": 0})
            m = gp.Model(env=env)
            m.Params.TimeLimit = float(max(time_limit, 0.01))
            m.Params.Threads = threads
            m.Params.IntFeasTol = INT_TOL
            if np.isfinite(cutoff):
                m.Params.Cutoff = float(cutoff)
            lb, ub = model.bounds()
            integer = model.integrality()
            x = m.addMVar(model.n_vars, lb=lb, ub=ub, vtype=np.where(integer, "I", "C"))
            for cols, vals, lo, hi in model.iter_rows():
                expr = gp.LinExpr(vals, [x[j].item() for j in cols])
                if np.isfinite(lo):
                    m.addLConstr(expr, ">=", lo)
                if np.isfinite(hi):
                    m.addLConstr(expr, "<=", hi)
            m.setObjective(model.cost() @ x + model.offset, gp.GRB.MAXIMIZE)
            if start is not None:
                idx, val = _partial(start, lb, ub)
                values = np.full(model.n_vars, gp.GRB.UNDEFINED)  # Gurobi completes the rest
                values[idx] = val
                x.Start = values
            watcher = _Watcher(stop, m.terminate)
            m.optimize()
            watcher.done()
        except gp.GurobiError as err:
            code = getattr(err, "errno", None)
            why = "size-limited licence" if code == self.SIZE_LIMIT else str(err)
            return MilpResult(ERROR, np.inf, seconds=time.monotonic() - t0, backend=self.name, message=why)
        seconds = time.monotonic() - t0
        st = m.Status
        GRB = gp.GRB
        if st == GRB.CUTOFF or (st == GRB.INFEASIBLE and np.isfinite(cutoff)):
            return _nothing_above(cutoff, seconds, self.name)
        if st == GRB.INFEASIBLE:
            return MilpResult(INFEASIBLE, -np.inf, seconds=seconds, backend=self.name)
        kind = {GRB.OPTIMAL: OPTIMAL, GRB.TIME_LIMIT: TIME_LIMIT, GRB.INTERRUPTED: INTERRUPTED}.get(st)
        if kind is None:
            return MilpResult(ERROR, np.inf, seconds=seconds, backend=self.name, message=f"status {st}")
        has = m.SolCount > 0
        bound = m.ObjBound if integer.any() else (m.ObjVal if has else np.inf)
        return MilpResult(kind, float(max(bound, cutoff)), m.ObjVal if has else None, x.X.copy() if has else None,
                          seconds, self.name)


def bound_stalled(trace: list[tuple[float, float]], target: float, time_limit: float) -> bool:
    """Whether a dual bound trace ``(seconds, bound)`` cannot reach ``target`` by ``time_limit``:
    past ``STALL_MIN_S`` and ``STALL_SHARE`` of the limit, ``STALL_RATE`` times the bound's fall over
    the second half of the time so far, kept up to the limit, still leaves it above ``target``.
    Needs a finite bound at half the time (a bound that only just appeared is not judged)."""
    if not trace:
        return False
    t, now = trace[-1]
    if t < max(STALL_MIN_S, STALL_SHARE * time_limit) or now < target or trace[0][0] > t / 2:
        return False
    then = trace[bisect.bisect_right(trace, t / 2, key=lambda sb: sb[0]) - 1][1]
    reach = STALL_RATE * max(then - now, 0.0) / (t / 2) * max(time_limit - t, 0.0)
    return now - reach > target


class _Watcher:
    """Calls ``interrupt`` when ``stop`` is set while a solver runs (for solvers without a callback)."""

    def __init__(self, stop: threading.Event | None, interrupt):
        self._finished = threading.Event()
        self._thread = None
        if stop is not None:
            def watch():
                while not self._finished.wait(0.05):
                    if stop.is_set():
                        interrupt()
                        return
            self._thread = threading.Thread(target=watch, daemon=True)
            self._thread.start()

    def done(self):
        self._finished.set()


def _within_share(time_limit: float, give_up: GiveUp | None, t0: float) -> float:
    """The time limit of a back-end that cannot hand its time over adaptively: it stops at the
    end of its share."""
    return time_limit if give_up is None else min(time_limit, give_up.share_until - t0)


def _nothing_above(cutoff: float, seconds: float, backend: str) -> MilpResult:
    """A solve that pruned everything: every point lies at or below the cutoff."""
    return MilpResult(OPTIMAL, float(cutoff), seconds=seconds, backend=backend, message="cutoff")


def _partial(start: tuple[np.ndarray, np.ndarray], lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(start[0], dtype=np.int64).ravel()
    return idx, np.clip(np.asarray(start[1], dtype=np.float64).ravel(), lb[idx], ub[idx])


BACKENDS = {b.name: b for b in (HighsBackend, ScipBackend, GurobiBackend)}


def backend_chain(preferred: str = "highs") -> list[Backend]:
    """Available back-ends, ``preferred`` first; callers try the next on ``error``."""
    if preferred not in BACKENDS:
        raise ValueError(f"unknown MILP back-end {preferred!r} (choose from {', '.join(BACKENDS)})")
    order = [preferred] + [n for n in ("highs", "scip") if n != preferred]
    return [BACKENDS[n]() for n in order if BACKENDS[n].available()]


def solve_with_fallback(chain: list[Backend], model: MilpModel, time_limit: float, **kw) -> MilpResult:
    """Solve with the first back-end that does not fail; the time limit is shared."""
    deadline = time.monotonic() + time_limit
    result = MilpResult(ERROR, np.inf, message="no MILP back-end available")
    for backend in chain:
        result = backend.solve(model, max(deadline - time.monotonic(), 0.01), **kw)
        if result.status != ERROR:
            return result
    return result
