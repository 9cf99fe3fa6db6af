"""The VNN-LIB 2.0 community's conformance suite (vnnlib-satisfactory) through our 2.0 command
line (``verify QUERY --network NAME=PATH``, ``supports ...``): no test may fail or error, and the
count of passed tests never falls below what is recorded in the README."""

import os
import re
import subprocess
import sys

PASSED_AT_LEAST = 177  # README: 177/178 passed, 0 failed


def test_vnnlib_satisfactory_suite(tmp_path):
    import vnntest.cli.main  # noqa: F401  (pinned in requirements.txt: installed with the rest)
    # the solver as this Python runs it (console scripts need not be on PATH)
    solver = tmp_path / "vnncomp-qeb"
    solver.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vnncomp_qeb "$@"\n')
    solver.chmod(0o755)
    env = dict(os.environ, NO_COLOR="1")
    suite = "import sys; from vnntest.cli.main import app; sys.argv = ['vnntest'] + sys.argv[1:]; app()"
    proc = subprocess.run([sys.executable, "-c", suite, "run", "--solver", str(solver), "--timeout", "20"],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800, env=env)
    out = proc.stdout + proc.stderr
    m = re.search(r"(\d+)/(\d+) passed, (\d+) failed, (\d+) suspect, (\d+) errored", out)
    assert m, out[-3000:]
    passed, _, failed, _, errored = map(int, m.groups())
    bad = [ln for ln in out.splitlines() if "❌" in ln or "💥" in ln]
    assert failed == 0 and errored == 0, "\n".join(bad) or out[-3000:]
    assert passed >= PASSED_AT_LEAST, m.group(0)
