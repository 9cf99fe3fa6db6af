"""Benchmark runner: every instance of an ``instances.csv`` in its own ``vnncomp-qeb verify``
process, in parallel, with results as CSV and JSON, a summary by category, a cactus plot and a
comparison against an earlier run.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass

KILL_GRACE_S = 10.0  # past the instance's timeout, the runner kills the verifier process


@dataclass
class Row:
    """One instance's outcome."""

    category: str
    model: str
    spec: str
    timeout: float
    verdict: str = ""
    time: float = 0.0
    stage: str = ""
    message: str = ""
    cwd: str = ""  # the instances.csv folder: model and spec paths are relative to it


def category_of(model: str, spec: str) -> str:
    """The group an instance is summarised in: the spec's stem up to its first ``_id`` / ``_prop``
    (qeb_mnist: ``P1_Q4``), else the model's stem."""
    stem = os.path.basename(spec).split(".")[0]
    for marker in ("_id", "_prop", "_eps"):
        if marker in stem:
            return stem.split(marker)[0]
    return os.path.basename(model).split(".")[0]


def read_instances(csv_path: str, timeout: float | None = None, match: str = "") -> list[Row]:
    """Rows of ``model,spec,timeout`` (paths relative to the CSV's folder)."""
    root = os.path.dirname(os.path.abspath(csv_path))
    rows = []
    with open(csv_path) as f:
        for rec in csv.reader(f):
            if not rec or rec[0].startswith("#"):
                continue
            model, spec, t = rec[0].strip(), rec[1].strip(), float(rec[2])
            if match and match not in model and match not in spec:
                continue
            rows.append(Row(category_of(model, spec), model, spec, timeout if timeout is not None else t, cwd=root))
    return rows


def run_one(row: Row, extra: list[str]) -> Row:
    """Run the verifier on one instance in its own process (killed if it overstays)."""
    with tempfile.TemporaryDirectory(prefix="qeb-bench-") as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = [sys.executable, "-m", "vnncomp_qeb", "verify", row.model, row.spec, "--timeout", str(row.timeout),
               "--quiet", "--json", out] + extra
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=row.timeout + KILL_GRACE_S,
                                  stdin=subprocess.DEVNULL, cwd=row.cwd or None)
            err = proc.stderr.strip().splitlines()
        except subprocess.TimeoutExpired:
            err = ["killed by the runner"]
        row.time = time.monotonic() - t0
        if os.path.exists(out):
            with open(out) as f:
                data = json.load(f)
            row.verdict, row.stage, row.message = data["verdict"], data["stage"], data["message"]
        else:
            row.verdict, row.message = "error", (err[-1] if err else "no output")
    return row


def run_all(rows: list[Row], jobs: int, extra: list[str], progress: bool = True) -> list[Row]:
    """Every row, ``jobs`` at a time, with a progress bar.

    Each verifier runs one MILP child per core, so with several jobs at once the cores are
    shared out between them (unless ``extra`` already says how many).
    """
    from tqdm import tqdm

    from vnncomp_qeb.isolate import usable_cores

    if jobs > 1 and "--milp-workers" not in extra:
        extra = extra + ["--milp-workers", str(max(1, usable_cores() // jobs))]

    bar = tqdm(total=len(rows), disable=not progress, unit="inst", file=sys.stderr)
    done = []
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        futures = [pool.submit(run_one, r, extra) for r in rows]
        for fut in as_completed(futures):
            r = fut.result()
            done.append(r)
            bar.set_postfix_str(f"{r.category} {r.verdict} {r.time:.1f}s")
            bar.update()
    bar.close()
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(done, key=lambda r: order[id(r)])


SOLVED = ("sat", "unsat")


def summary(rows: list[Row]) -> str:
    """Counts per category: sat / unsat / timeout / other, solved, mean time of solved."""
    cats: dict[str, list[Row]] = {}
    for r in rows:
        cats.setdefault(r.category, []).append(r)
    lines = [f"{'category':24s} {'n':>4s} {'sat':>4s} {'unsat':>5s} {'t/o':>4s} {'other':>5s} {'solved':>6s} {'mean s':>7s}"]
    for name, rs in list(cats.items()) + [("ALL", rows)]:
        solved = [r for r in rs if r.verdict in SOLVED]
        count = lambda v: sum(r.verdict == v for r in rs)  # noqa: E731
        other = len(rs) - count("sat") - count("unsat") - count("timeout")
        mean = sum(r.time for r in solved) / len(solved) if solved else 0.0
        lines.append(f"{name:24s} {len(rs):4d} {count('sat'):4d} {count('unsat'):5d} {count('timeout'):4d} "
                     f"{other:5d} {len(solved):6d} {mean:7.2f}")
    return "\n".join(lines)


def compare(rows: list[Row], previous: list[dict]) -> str:
    """Per-instance changes against an earlier run; contradictions (sat vs unsat) flagged."""
    old = {(os.path.basename(p["model"]), os.path.basename(p["spec"])): p for p in previous}
    lines, gained, lost, clash = [], 0, 0, 0
    for r in rows:
        p = old.get((os.path.basename(r.model), os.path.basename(r.spec)))
        if p is None:
            continue
        was, now = p["verdict"] in SOLVED, r.verdict in SOLVED
        if was and now and p["verdict"] != r.verdict:
            clash += 1
            lines.append(f"CONTRADICTION {os.path.basename(r.spec)}: {p['verdict']} before, {r.verdict} now")
        gained += now and not was
        lost += was and not now
        if p["verdict"] != r.verdict or abs(p["time"] - r.time) > max(1.0, 0.5 * p["time"]):
            lines.append(f"{os.path.basename(r.spec):40s} {p['verdict']:>8s} {p['time']:7.2f}s -> "
                         f"{r.verdict:>8s} {r.time:7.2f}s")
    head = f"compared with the earlier run: {gained} newly solved, {lost} no longer solved, {clash} contradictions"
    return "\n".join([head] + lines)


def cactus(runs: dict[str, list[Row]], path: str) -> None:
    """Cactus plot: instances solved (x) within a time (y), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in runs.items():
        times = sorted(r.time for r in rows if r.verdict in SOLVED)
        ax.plot(range(1, len(times) + 1), times, marker=".", label=f"{label} ({len(times)} solved)")
    ax.set_xlabel("instances solved")
    ax.set_ylabel("time per instance (s)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: list[Row], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0]).keys()) if rows else ["category"])
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump([asdict(r) for r in rows], f, indent=1)
