"""Scripted check of the VNN-COMP scripts on bad and stressful input: for each case, the exit
code, the verdict written, the message, processes left behind and stray files. Prints a table;
exits 1 if any case fails. tests/test_harness_edges.py runs it.

    python scripts/check_harness.py [--only NAME]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import psutil

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RUN, PREPARE = os.path.join(ROOT, "run_instance.sh"), os.path.join(ROOT, "prepare_instance.sh")
EX = os.path.join(ROOT, "specs", "examples")
TWIN = os.path.join(EX, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx")
SAT_SPEC = os.path.join(EX, "vnnlib", "twin_p2_r0.001_eps0.05.vnnlib")
SLOW = "{d}/slow.vnnlib"  # undecided for seconds: branch and bound on a wide box


def _slow(d):
    from vnncomp_qeb.io.vnnlib_writer import error_bound_v1

    c = np.array([0.2, -0.1, 0.0, -0.3, 0.4])
    _write(os.path.join(d, "slow.vnnlib"), error_bound_v1(c - 0.1, c + 0.1, 0.3, list(range(5)), 5))


@dataclass
class Case:
    name: str
    args: list  # run_instance.sh arguments after v1 (use {d} for the work folder)
    verdict: str | None  # expected line 1 of the results file; None: no file can exist
    says: str = ""  # expected in stderr
    setup: object = None  # fn(folder) run first
    signal_after: tuple | None = None  # (seconds, signal, target: "script")
    results: str = "{d}/out.txt"
    extra: dict = field(default_factory=dict)


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _nan_model(d):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    W = np.array([[1.0, np.nan], [0.0, 1.0]], np.float32)
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"])], "nan", [h.make_tensor_value_info("x", T.FLOAT, [1, 2])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 2])], [nh.from_array(W, "W")])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=8), os.path.join(d, "nan.onnx"))
    _write(os.path.join(d, "two.vnnlib"), "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
           "(declare-const Y_1 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
           "(assert (>= Y_0 5))\n")


def _ir99(d):
    import onnx

    m = onnx.load(TWIN)
    m.ir_version = 99
    onnx.save(m, os.path.join(d, "ir99.onnx"))


def _spec_variant(d, name, transform):
    with open(SAT_SPEC, encoding="utf-8") as f:
        text = f.read()
    _write(os.path.join(d, name), transform(text))


def _bracket_file(d):
    shutil.copy(TWIN, os.path.join(d, "[x].onnx"))


def _huge(d):  # 300,000 disjuncts over one input (about 12 MB)
    with open(os.path.join(d, "huge.vnnlib"), "w") as f:
        f.write("(declare-const X_0 Real)\n" + "".join(f"(declare-const X_{i} Real)\n" for i in range(1, 5)))
        f.write("".join(f"(declare-const Y_{j} Real)\n" for j in range(5)))
        f.write("(assert (or\n")
        for k in range(300_000):
            f.write(f" (and (>= X_0 {k}) (<= X_0 {k + 1}))\n")
        f.write("))\n")


CASES = [
    Case("sat instance", [TWIN, SAT_SPEC], "sat"),
    Case("missing onnx", ["{d}/none.onnx", SAT_SPEC], "error", "file not found"),
    Case("folder as onnx", ["{d}", SAT_SPEC], "error", "is a folder"),
    Case("folder as vnnlib", [TWIN, "{d}"], "error", "is a folder"),
    Case("file named [x].onnx", ["{d}/[x].onnx", SAT_SPEC], "sat", setup=_bracket_file),
    Case("NaN weights", ["{d}/nan.onnx", "{d}/two.vnnlib"], "error", "NaN", setup=_nan_model),
    Case("NaN in vnnlib", [TWIN, "{d}/nan.vnnlib"], "error", "not finite",
         setup=lambda d: _spec_variant(d, "nan.vnnlib", lambda t: t.replace("(<= X_0 0.201)", "(<= X_0 nan)", 1)
                                       if "(<= X_0 0.201)" in t else t.replace("(assert (<= X_0", "(assert (<= X_0 nan) (<= X_0", 1))),
    Case("UTF-8 BOM", [TWIN, "{d}/bom.vnnlib"], "sat", setup=lambda d: _spec_variant(d, "bom.vnnlib", lambda t: "\ufeff" + t)),
    Case("Int declaration", [TWIN, "{d}/int.vnnlib"], "error", "only Real",
         setup=lambda d: _spec_variant(d, "int.vnnlib", lambda t: t.replace("(declare-const X_0 Real)", "(declare-const X_0 Int)"))),
    Case("IR version 99", ["{d}/ir99.onnx", SAT_SPEC], "error", "onnxruntime cannot load", setup=_ir99),
    Case("300k disjuncts", [TWIN, "{d}/huge.vnnlib"], "error", "split it", setup=_huge),
    Case("timeout 0", [TWIN, SAT_SPEC], "error", "positive number", extra={"timeout": "0"}),
    Case("timeout -5", [TWIN, SAT_SPEC], "error", "positive number", extra={"timeout": "-5"}),
    Case("results under /proc", [TWIN, SAT_SPEC], None, "cannot write", results="/proc/qeb-results"),
    Case("results parent is a file", [TWIN, SAT_SPEC], None, "cannot write", results="{d}/afile/out.txt",
         setup=lambda d: _write(os.path.join(d, "afile"), "x")),
    Case("results is a folder", [TWIN, SAT_SPEC], None, "is a folder", results="{d}/sub",
         setup=lambda d: os.mkdir(os.path.join(d, "sub"))),
    Case("results path empty", [TWIN, SAT_SPEC], None, "empty", results=""),
    Case("stale verdict replaced", [TWIN, SAT_SPEC], "sat", results="{d}/old.txt",
         setup=lambda d: _write(os.path.join(d, "old.txt"), "unsat\n")),
    Case("SIGTERM at 15 ms", [TWIN, SLOW], "timeout", signal_after=(0.015, signal.SIGTERM), setup=_slow),
    Case("SIGTERM at 2 s", [TWIN, SLOW], "timeout", signal_after=(2.0, signal.SIGTERM), setup=_slow),
    Case("SIGKILL at 2 s", [TWIN, SLOW], "", signal_after=(2.0, signal.SIGKILL), setup=_slow),
    Case("timeout 4 s", [TWIN, SLOW], "timeout", setup=_slow, extra={"timeout": "4"}),
]


def _ours(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in a for a in (p.info["cmdline"] or [])):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def run_case(case: Case, base: str) -> dict:
    d = tempfile.mkdtemp(prefix="case-", dir=base)
    if case.setup:
        case.setup(d)
    before = set(os.listdir(d))
    results = case.results.format(d=d)
    args = [a.format(d=d) for a in case.args]
    timeout = case.extra.get("timeout", "20" if case.signal_after is None else "8")
    env = dict(os.environ, TMPDIR=base)
    cmd = [RUN, "v1", "edge", *args, results, timeout]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=base, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    if case.signal_after:
        time.sleep(case.signal_after[0])
        proc.send_signal(case.signal_after[1])
    out, err = proc.communicate(timeout=120)
    wall = time.monotonic() - t0
    time.sleep(1.0 if case.signal_after else 0.2)  # a verifier left running would write by now
    left = [p for p in _ours(d) if p.pid != proc.pid]
    for p in left:
        p.kill()
    verdict = None
    if results and os.path.isfile(results):
        with open(results, encoding="utf-8") as f:
            verdict = f.readline().strip()
    os.chmod(d, 0o755)
    stray = sorted(set(os.listdir(d)) - before - {os.path.basename(results)})
    killed = case.signal_after and case.signal_after[1] == signal.SIGKILL
    expect_rc = -signal.SIGKILL if killed else 0
    want = case.verdict
    ok = (proc.returncode == expect_rc and not left and not stray and "Traceback" not in err
          and (case.says in err) and (verdict == want if want is not None else verdict in (None, "")))
    if killed:  # the script dies with no verdict; what matters is that nothing runs on or writes late
        ok = proc.returncode == expect_rc and not left and verdict in (None, "")
    return {"case": case.name, "rc": proc.returncode, "verdict": verdict, "left": len(left), "stray": stray,
            "wall": wall, "ok": ok, "said": _message(err)}


def _message(err: str) -> str:
    """The line that says why: the first error line, else the last line."""
    lines = err.strip().splitlines() or [""]
    said = next((ln for ln in lines if ln.startswith(("error:", "run_instance.sh:"))), lines[-1])
    return said[:110]


def concurrent_prepare(base: str) -> dict:
    """prepare_instance.sh while another run is live: that run must finish with its verdict."""
    d = tempfile.mkdtemp(prefix="case-", dir=base)
    env = dict(os.environ, TMPDIR=base)
    results = os.path.join(d, "out.txt")
    _slow(d)
    proc = subprocess.Popen([RUN, "v1", "edge", TWIN, SLOW.format(d=d), results, "6"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(1.5)
    prep = subprocess.run([PREPARE, "v1", "edge", TWIN, SAT_SPEC], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    proc.communicate(timeout=60)
    with open(results, encoding="utf-8") as f:
        verdict = f.readline().strip()
    ok = prep.returncode == 0 and verdict == "timeout"  # it ran to its deadline
    return {"case": "prepare during a live run", "rc": prep.returncode, "verdict": verdict, "left": 0, "stray": [],
            "wall": 0.0, "ok": ok, "said": prep.stderr.strip()[:90]}


def orphan_cleanup(base: str) -> dict:
    """A recorded verifier group whose script is gone is killed by prepare_instance.sh."""
    piddir = os.path.join(base, f"vnncomp-qeb-{os.getuid()}")
    os.makedirs(piddir, exist_ok=True)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "vnncomp_qeb"],
                              start_new_session=True)
    with open(os.path.join(piddir, f"{orphan.pid}.pid"), "w") as f:
        f.write(f"{orphan.pid} 999999999\n")  # its script: a pid that cannot exist
    prep = subprocess.run([PREPARE, "v1", "edge", TWIN, SAT_SPEC], env=dict(os.environ, TMPDIR=base),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    try:
        orphan.wait(timeout=5)
        gone = True
    except subprocess.TimeoutExpired:
        orphan.kill()
        gone = False
    return {"case": "prepare kills an orphan", "rc": prep.returncode, "verdict": "-", "left": int(not gone),
            "stray": [], "wall": 0.0, "ok": prep.returncode == 0 and gone, "said": prep.stderr.strip()[:90]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    args = ap.parse_args(argv)
    base = tempfile.mkdtemp(prefix="qeb-harness-")
    rows = []
    try:
        for case in CASES:
            if args.only in case.name:
                rows.append(run_case(case, base))
        if args.only in "prepare during a live run":
            rows.append(concurrent_prepare(base))
        if args.only in "prepare kills an orphan":
            rows.append(orphan_cleanup(base))
    finally:
        for root, dirs, _ in os.walk(base):
            for x in dirs:
                os.chmod(os.path.join(root, x), 0o755)
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'case':28s} {'ok':3s} {'rc':>4s} {'verdict':8s} {'left':>4s} {'stray':6s} {'wall s':>6s}  message")
    for r in rows:
        print(f"{r['case']:28s} {'yes' if r['ok'] else 'NO':3s} {r['rc']:4d} {str(r['verdict']):8s} {r['left']:4d} "
              f"{','.join(r['stray']) or '-':6s} {r['wall']:6.2f}  {r['said']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
