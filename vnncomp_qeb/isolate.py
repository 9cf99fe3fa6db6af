"""Run a solver in a child process under a watchdog on wall time and memory.

The child is forked (it inherits the loaded networks, nothing is pickled on the way in) and
sends its result back through a pipe. The parent polls it with psutil: past the deadline or
over the memory cap the child's whole process tree is killed, and the call returns a status
saying why. Either way no child outlives the call. A child may also send interim results
(:func:`report`): the last one is kept with a child that is killed (e.g. a certified bound).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import psutil
from threadpoolctl import threadpool_limits

OK, OUT_OF_TIME, OUT_OF_MEMORY, CRASHED, CANCELLED = "ok", "out_of_time", "out_of_memory", "crashed", "cancelled"
PROGRESS = "progress"
POLL_S = 0.02
MEM_POLL_S = 0.2  # a child's private memory is read this often (reading it costs ~10 ms)
_REPORT = None  # in a child: the pipe to its parent


@dataclass
class Isolated:
    """``status`` is ok (``value`` holds the result), out_of_time, out_of_memory, crashed or
    cancelled (another call of the same batch settled the question first)."""

    status: str
    value: Any = None
    message: str = ""
    peak_mb: float = 0.0
    progress: Any = None  # the last interim result the child reported


def report(value: Any) -> None:
    """Send an interim result to the parent, kept if this child is stopped before it answers
    (a no-op outside an isolated child)."""
    if _REPORT is not None:
        try:
            _REPORT.send((PROGRESS, value, ""))
        except (OSError, ValueError):
            pass


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_memory_cap_mb() -> float:
    """Most of what the machine has free now, leaving room for the parent."""
    return 0.75 * psutil.virtual_memory().available / 2**20


def _child(conn, fn, args, threads: int):
    global _REPORT
    _REPORT = conn
    try:
        # children side by side share the cores: a BLAS pool per child sized for all of them
        # oversubscribes (measured: two children's numpy passes 2.4x slower)
        with threadpool_limits(limits=threads):
            conn.send((OK, fn(*args), ""))
    except MemoryError:
        conn.send((OUT_OF_MEMORY, None, "MemoryError"))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, never lost
        conn.send((CRASHED, None, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"))
    finally:
        conn.close()


def _tree_private_mb(proc: psutil.Process) -> float:
    """Memory the child and its descendants hold of their own (unique set size). Not the resident
    size: a forked child maps every page its parent has resident (shared until written), so its
    RSS starts at the parent's — a parent holding a few GB of bound arrays got its children killed
    "out of memory" at once."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().uss
        except psutil.AccessDenied:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _kill_tree(proc: psutil.Process) -> None:
    try:
        procs = proc.children(recursive=True) + [proc]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=2)


def run_isolated(fn: Callable, *args, deadline: float, memory_mb: float | None = None) -> Isolated:
    """``fn(*args)`` in a forked child, killed at ``deadline`` (time.monotonic) or above
    ``memory_mb`` of its own (child and its children: unique set size)."""
    return run_isolated_all([(fn, args)], deadline=deadline, memory_mb=memory_mb)[0]


def run_isolated_all(calls: list[tuple[Callable, tuple]], *, deadline: float, memory_mb: float | None = None,
                     enough: Callable[[Isolated], bool] = lambda r: False,
                     refill: Callable[[list[Isolated | None]], tuple[Callable, tuple] | None] | None = None,
                     ) -> list[Isolated]:
    """Every ``fn(*args)`` of ``calls`` in its own forked child, all at once (one per core),
    each under the deadline and an equal share of ``memory_mb``. As soon as one result makes
    ``enough`` true the others are stopped (status ``cancelled``).

    ``refill(results)`` is asked whenever a child ends (``results`` so far, None where still
    running) and may return a helper call for the freed core. Helpers count for ``enough`` but
    nobody waits for them: once every call of ``calls`` has ended they are cancelled. Results in
    call order, the helpers' after them."""
    cap = (default_memory_cap_mb() if memory_mb is None else memory_mb) / max(len(calls), 1)
    threads = max(1, usable_cores() // max(len(calls), 1))
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    running = []

    def start(fn, args):
        peaks.append(0.0)
        checked.append(0.0)
        progress.append(None)
        recv, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child, args=(send, fn, args, threads), daemon=True)
        child.start()
        send.close()
        running.append((child, psutil.Process(child.pid), recv))

    peaks: list[float] = []
    checked: list[float] = []  # when each child's memory was last read
    progress: list = []
    for fn, args in calls:
        start(fn, args)
    results: list[Isolated | None] = [None] * len(calls)
    try:
        while any(r is None for r in results[:len(calls)]):
            for i in range(len(running)):
                if results[i] is not None:
                    continue
                child, proc, recv = running[i]
                results[i] = _poll(child, proc, recv, cap, deadline, peaks, progress, i, checked)
                if results[i] is None:
                    continue
                results, settled = settle(results, i, enough, refill, deadline, start)
                if settled:
                    break
            time.sleep(POLL_S)
    finally:
        for child, proc, recv in running:
            if child.is_alive():
                _kill_tree(proc)
            child.join(timeout=2)
            recv.close()
    results = cancel_rest(results)
    for r, peak, last in zip(results, peaks, progress):
        r.peak_mb = peak
        r.progress = last
    return results


def settle(results: list, i: int, enough, refill, deadline: float, start) -> tuple[list, bool]:
    """Call ``i`` has ended: (results with the rest cancelled, True) when its result settles the
    batch (``enough``); else the helper call ``refill`` offers for the freed core is started
    (``start(fn, args)``, a new slot in ``results``) and (results, False) returned."""
    if enough(results[i]):
        return cancel_rest(results), True
    helper = refill(results) if refill is not None and time.monotonic() < deadline else None
    if helper is not None:
        results.append(None)
        start(*helper)
    return results, False


def cancel_rest(results: list) -> list[Isolated]:
    """Every call without a result marked cancelled."""
    return [r if r is not None else Isolated(CANCELLED) for r in results]


def _poll(child, proc: psutil.Process, recv, cap: float, deadline: float, peaks: list, progress: list,
          i: int, checked: list) -> Isolated | None:
    """The child's outcome if it has one now (or must be stopped), else None; interim results
    go to ``progress[i]``."""
    while recv.poll(0):
        try:
            status, value, message = recv.recv()
        except EOFError:
            return Isolated(CRASHED, message=f"child exited with code {child.exitcode}")
        if status != PROGRESS:
            return Isolated(status, value, message)
        progress[i] = value
    if time.monotonic() - checked[i] >= MEM_POLL_S:
        checked[i] = time.monotonic()
        mem = _tree_private_mb(proc)
        peaks[i] = max(peaks[i], mem)
        if mem > cap:
            return Isolated(OUT_OF_MEMORY, message=f"{mem:.0f} MB of its own > cap {cap:.0f} MB")
    if time.monotonic() >= deadline:
        return Isolated(OUT_OF_TIME, message="deadline reached")
    if not child.is_alive() and not recv.poll(0):
        return Isolated(CRASHED, message=f"child exited with code {child.exitcode}")
    return None
