"""One hard instance across a Ray cluster: the MILP's calls (polytope shares, witness-search
helpers) as Ray tasks with the semantics of :func:`vnncomp_qeb.isolate.run_isolated_all`, and the
branch-and-bound's DRA on batches of boxes split over the workers.

Deadlines are ``time.monotonic()`` values of the driver; a task is given its remaining budget and
rebuilds the deadline on its own clock (clocks of different machines are unrelated). The driver
cancels (kills) every task still running at the deadline. Soundness is the driver's: it replays
every witness in onnxruntime and counts a case proven only when every share is.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from vnncomp_qeb.isolate import CANCELLED, CRASHED, OK, OUT_OF_TIME, Isolated, cancel_rest, settle

POLL_S = 0.02


def cluster_cpus() -> int:
    """CPUs of the connected cluster (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _run_rebased(fn: Callable, args: tuple, deadline_arg: int, budget: float):
    """On a worker: ``fn(*args)`` with ``args[deadline_arg]`` re-expressed on this machine's clock."""
    args = list(args)
    args[deadline_arg] = time.monotonic() + budget
    return fn(*args)


def run_remote_all(calls: list[tuple[Callable, tuple]], *, deadline: float, deadline_arg: int,
                   enough: Callable[[Isolated], bool] = lambda r: False,
                   refill: Callable[[list[Isolated | None]], tuple[Callable, tuple] | None] | None = None,
                   memory_mb: float | None = None) -> list[Isolated]:
    """:func:`~vnncomp_qeb.isolate.run_isolated_all` on Ray: every call a task (one CPU each),
    ``enough`` cancels the rest, ``refill`` may start a helper whenever a call ends. The memory
    cap is Ray's own (its memory monitor kills a task that exhausts its node)."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=1)(_run_rebased)
    refs: list = []

    def start(fn, args):  # the call's own deadline (its margins kept), as a budget from now
        refs.append(task.remote(fn, args, deadline_arg, max(args[deadline_arg] - time.monotonic(), 0.0)))

    for fn, args in calls:
        start(fn, args)
    results: list[Isolated | None] = [None] * len(calls)
    try:
        while any(r is None for r in results[:len(calls)]):
            if time.monotonic() >= deadline:
                results = [r if r is not None else Isolated(OUT_OF_TIME, message="deadline reached") for r in results]
                break
            pending = [ref for ref, r in zip(refs, results) if r is None]
            ready, _ = ray.wait(pending, num_returns=1, timeout=max(min(deadline - time.monotonic(), 0.5), POLL_S))
            for ref in ready:
                i = refs.index(ref)
                try:
                    results[i] = Isolated(OK, ray.get(ref))
                except Exception as exc:  # the task raised, or its worker died
                    results[i] = Isolated(CRASHED, message=f"{type(exc).__name__}: {exc}"[:500])
                results, settled = settle(results, i, enough, refill, deadline, start)
                if settled:
                    break
    finally:
        for ref, r in zip(refs, results):
            if r is None or r.status in (CANCELLED, OUT_OF_TIME):
                ray.cancel(ref, force=True)
    return cancel_rest(results)


def _dra_rows(graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray):
    """On a worker: the DRA's row lower bounds and their input coefficients for a chunk of boxes."""
    from vnncomp_qeb.analysis.dra import row_lower_bounds

    coeffs: list = []
    rows = row_lower_bounds(graph, lower, upper, A, coeffs)
    return rows, coeffs[0]


class RemoteDRA:
    """The branch and bound's box analysis spread over the cluster: a batch of boxes is cut into
    one chunk per worker; the graph is shipped once."""

    def __init__(self, graph):
        import ray

        self.ray = ray
        self.graph_ref = ray.put(graph)
        self.task = ray.remote(num_cpus=1, max_retries=1)(_dra_rows)
        self.workers = cluster_cpus()

    def rows(self, lower: np.ndarray, upper: np.ndarray, A: np.ndarray):
        """(rows (B, r), coefficients (B, r, n)) as :func:`row_lower_bounds` gives them."""
        k = min(self.workers, lower.shape[0])
        parts = np.array_split(np.arange(lower.shape[0]), k)
        refs = [self.task.remote(self.graph_ref, lower[p], upper[p], A) for p in parts]
        got = self.ray.get(refs)
        return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
