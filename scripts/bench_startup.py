"""Start-up overhead: wall time of run_instance.sh on a trivial instance (a 2-4-1 network whose
property is decided by the first interval bound, like VNN-COMP's test_nano), next to the time
Python takes just to import numpy, onnx and onnxruntime (the floor) in the same process run.

    python scripts/bench_startup.py [--runs 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests"))

NANO_SPEC = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(assert (>= X_0 -1.0))
(assert (<= X_0 1.0))
(assert (>= X_1 -1.0))
(assert (<= X_1 1.0))
(assert (>= Y_0 1000.0))
"""


def timed(cmd, **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True, **kw)
    return time.perf_counter() - t0


def main() -> None:
    import models as M

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        M.float_mlp(os.path.join(d, "nano.onnx"), sizes=(2, 4, 1), seed=0)
        with open(os.path.join(d, "nano.vnnlib"), "w") as f:
            f.write(NANO_SPEC)
        floor = [timed([sys.executable, "-c", "import numpy, onnx, onnxruntime"]) for _ in range(args.runs)]
        runs = []
        for _ in range(args.runs):
            runs.append(timed([os.path.join(ROOT, "run_instance.sh"), "v1", "test", "nano.onnx", "nano.vnnlib",
                               "out.txt", "30"], cwd=d))
            with open(os.path.join(d, "out.txt")) as f:
                assert f.readline().strip() == "unsat"
    med, base = statistics.median(runs), statistics.median(floor)
    print(f"run_instance.sh on nano: median {med:.2f} s (min {min(runs):.2f}); "
          f"import floor {base:.2f} s; overhead above the floor {med - base:.2f} s")


if __name__ == "__main__":
    main()
