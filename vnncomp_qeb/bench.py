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
    node: str = "local"  # where it ran (a Ray node: IP/node id)

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the instance across runs (for --resume)."""
        return (self.model, self.spec)


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


def run_one(row: Row, extra: list[str], threads: int | None = None) -> Row:
    """Run the verifier on one instance in its own process (killed if it overstays), its BLAS
    limited to ``threads`` (instances run side by side must not oversubscribe the cores)."""
    env = None
    if threads is not None:
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(threads))
    with tempfile.TemporaryDirectory(prefix="qeb-bench-") as tmp:
        out = os.path.join(tmp, "out.json")
        # its own process group, watching this process: if the runner (or the Ray worker running
        # it) dies, the verifier and its MILP children end too
        cmd = [sys.executable, "-m", "vnncomp_qeb", "verify", row.model, row.spec, "--timeout", str(row.timeout),
               "--quiet", "--json", out, "--parent-pid", str(os.getpid())] + extra
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=row.timeout + KILL_GRACE_S,
                                  stdin=subprocess.DEVNULL, cwd=row.cwd or None, start_new_session=True, env=env)
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


JOURNAL = "journal.jsonl"  # one line per finished instance, written as it finishes


def read_journal(out_dir: str) -> dict[tuple[str, str], Row]:
    """The rows an earlier (possibly interrupted) run of ``out_dir`` finished, by instance."""
    done: dict[tuple[str, str], Row] = {}
    path = os.path.join(out_dir, JOURNAL)
    if not os.path.exists(path):
        return done
    with open(path) as f:
        for line in f:
            try:
                row = Row(**json.loads(line))
            except (ValueError, TypeError):  # a line cut short by the interruption
                continue
            done.setdefault(row.key, row)
    return done


class Journal:
    """Appends each finished row to ``out_dir/journal.jsonl`` and syncs it: a verdict is on disk
    before the next one is awaited, and --resume finds it. A row is recorded at most once."""

    def __init__(self, out_dir: str, done: dict | None = None):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, JOURNAL)
        self.keys = set(done or ())

    def record(self, row: Row) -> bool:
        if row.key in self.keys:
            return False
        self.keys.add(row.key)
        with open(self.path, "a") as f:
            f.write(json.dumps(asdict(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True


def run_all(rows: list[Row], jobs: int, extra: list[str], progress: bool = True, out_dir: str | None = None,
            resume: bool = False, ray_address: str | None = None, cores_per_instance: int = 1) -> list[Row]:
    """Every row, ``jobs`` at a time (or as Ray tasks on ``ray_address``), with a progress bar
    (done/total, ETA). With ``out_dir`` each finished row goes to its journal at once; with
    ``resume`` the rows the journal already holds are not run again.

    Each verifier runs one MILP child per core, so with several jobs at once the cores are
    shared out between them (unless ``extra`` already says how many).
    """
    from tqdm import tqdm

    from vnncomp_qeb.isolate import usable_cores

    earlier = read_journal(out_dir) if (out_dir and resume) else {}
    journal = Journal(out_dir, earlier) if out_dir else None
    todo = [r for r in rows if r.key not in earlier]
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), disable=not progress, unit="inst", file=sys.stderr)
    finished: dict[tuple[str, str], Row] = {k: v for k, v in earlier.items() if k in {r.key for r in rows}}

    def done(r: Row) -> None:
        if journal is None or journal.record(r):
            finished[r.key] = r
            bar.set_postfix_str(f"{r.category} {r.verdict} {r.time:.1f}s {r.node}")
            bar.update()

    if ray_address:
        from vnncomp_qeb.cluster.bench_tasks import run_on_ray

        cores_extra = extra if "--milp-workers" in extra else extra + ["--milp-workers", str(cores_per_instance)]
        run_on_ray(todo, cores_extra, ray_address, cores_per_instance, done)
    else:
        share = max(1, usable_cores() // max(jobs, 1))
        if jobs > 1 and "--milp-workers" not in extra:
            extra = extra + ["--milp-workers", str(share)]
        threads = share if jobs > 1 else None
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            for fut in as_completed([pool.submit(run_one, r, extra, threads) for r in todo]):
                done(fut.result())
    bar.close()
    return [finished[r.key] for r in rows if r.key in finished]


SOLVED = ("sat", "unsat")


def summary(rows: list[Row]) -> str:
    """Counts per category: sat / unsat / timeout / other, solved, mean time of solved."""
    cats: dict[str, list[Row]] = {}
    for r in rows:
        cats.setdefault(r.category, []).append(r)
    w = max([len("category")] + [len(c) for c in cats])  # the column fits the longest name
    lines = [f"{'category':{w}s} {'n':>4s} {'sat':>4s} {'unsat':>5s} {'t/o':>4s} {'other':>5s} {'solved':>6s} {'mean s':>7s}"]
    for name, rs in list(cats.items()) + [("ALL", rows)]:
        solved = [r for r in rs if r.verdict in SOLVED]
        count = lambda v: sum(r.verdict == v for r in rs)  # noqa: E731
        other = len(rs) - count("sat") - count("unsat") - count("timeout")
        mean = sum(r.time for r in solved) / len(solved) if solved else 0.0
        lines.append(f"{name:{w}s} {len(rs):4d} {count('sat'):4d} {count('unsat'):5d} {count('timeout'):4d} "
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
