"""Run a solver in a child process under a watchdog on wall time and memory.

The child is forked (it inherits the loaded networks, nothing is pickled on the way in) and
sends its result back through a pipe. The parent polls it with psutil: past the deadline or
over the memory cap the child's whole process tree is killed, and the call returns a status
saying why. Either way no child outlives the call.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import psutil

OK, OUT_OF_TIME, OUT_OF_MEMORY, CRASHED = "ok", "out_of_time", "out_of_memory", "crashed"
POLL_S = 0.02


@dataclass
class Isolated:
    """``status`` is ok (``value`` holds the result), out_of_time, out_of_memory or crashed."""

    status: str
    value: Any = None
    message: str = ""
    peak_mb: float = 0.0


def default_memory_cap_mb() -> float:
    """Most of what the machine has free now, leaving room for the parent."""
    return 0.75 * psutil.virtual_memory().available / 2**20


def _child(conn, fn, args):
    try:
        conn.send((OK, fn(*args), ""))
    except MemoryError:
        conn.send((OUT_OF_MEMORY, None, "MemoryError"))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, never lost
        conn.send((CRASHED, None, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"))
    finally:
        conn.close()


def _tree_rss_mb(proc: psutil.Process) -> float:
    try:
        procs = [proc] + proc.children(recursive=True)
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return 0.0


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
    ``memory_mb`` resident (child and its children)."""
    cap = default_memory_cap_mb() if memory_mb is None else memory_mb
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    child.start()
    send.close()
    proc = psutil.Process(child.pid)
    peak = 0.0
    result: Isolated | None = None
    try:
        while result is None:
            if recv.poll(POLL_S):
                try:
                    status, value, message = recv.recv()
                    result = Isolated(status, value, message)
                except EOFError:
                    result = Isolated(CRASHED, message=f"child exited with code {child.exitcode}")
                break
            rss = _tree_rss_mb(proc)
            peak = max(peak, rss)
            if rss > cap:
                result = Isolated(OUT_OF_MEMORY, message=f"{rss:.0f} MB resident > cap {cap:.0f} MB")
            elif time.monotonic() >= deadline:
                result = Isolated(OUT_OF_TIME, message="deadline reached")
            elif not child.is_alive() and not recv.poll(0):
                result = Isolated(CRASHED, message=f"child exited with code {child.exitcode}")
    finally:
        if child.is_alive():
            _kill_tree(proc)
        child.join(timeout=2)
        recv.close()
    result.peak_mb = peak
    return result
