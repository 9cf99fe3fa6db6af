"""``vnncomp-qeb bench --ray``: each instance one Ray task, its verifier in its own process with
the cores it asks for. A task lost with its node is retried by Ray on another node; the driver
records each instance once, when its task's result arrives."""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

from vnncomp_qeb.bench import Row, run_one
from vnncomp_qeb.cluster.connect import node_name, ray_runtime

RETRIES = 3  # a task whose node dies is run again elsewhere, up to this many times


def _task(row: dict, extra: list[str]) -> dict:
    """On a worker: run the instance (in a child process, as a local bench does)."""
    r = run_one(Row(**row), extra)
    r.node = node_name()
    return asdict(r)


def run_on_ray(rows: list[Row], extra: list[str], address: str, cores: int, done: Callable[[Row], None]) -> None:
    """Run every row as a Ray task on ``address``; ``done(row)`` as each result arrives."""
    with ray_runtime(address) as ray:
        task = ray.remote(num_cpus=cores, max_retries=RETRIES, retry_exceptions=False)(_task)
        pending = {task.remote(asdict(r), extra): r for r in rows}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            row = pending.pop(ref)
            try:
                done(Row(**ray.get(ref)))
            except Exception as exc:  # retries exhausted (node lost each time) or the task failed
                row.verdict, row.message, row.node = "error", f"Ray task failed: {type(exc).__name__}: {exc}"[:300], "-"
                done(row)
