"""Shared by the benchmarks' generate_properties.py: write instances in VNN-COMP layout.

Each instance is written twice: as a difference model with a VNN-LIB 1.0 property (listed in
``instances.csv``) and as two networks with a VNN-LIB 2.0 query (``instances_v2.csv``, whose
first column is the harness's list literal of (name, path) pairs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Callable

import numpy as np
import onnx

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from vnncomp_qeb.io.fixed_point import QebNet, load_qebnet  # noqa: E402
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1, error_bound_v2  # noqa: E402

NETWORKS = os.path.join(ROOT, "specs", "networks")
MAX_TOTAL_S = 6 * 3600
MNIST_NETS = {"P1": "PTQ_mnist_1blk_100_in_8_relu_0", "P2": "PTQ_mnist_2blk_100_100_in_8_relu_0",
              "P3": "PTQ_mnist_2blk_512_512_in_8_relu_0", "P4": "PTQ_mnist_3blk_100_100_100_in_8_relu_0"}
ACAS_NETS = {f"N{a}_{b}": f"ACASXU_run2a_{a}_{b}_batch_2000" for a in range(1, 6) for b in range(1, 10)}


def qebnet(file_name: str) -> QebNet:
    """A network of specs/networks/qebverif by its file name (without .npz)."""
    return load_qebnet(os.path.join(NETWORKS, "qebverif", file_name + ".npz"))


def mnist_networks():
    """(short name, network) for P1..P4."""
    for short, name in MNIST_NETS.items():
        yield short, qebnet(name)


def mnist_samples() -> dict[str, np.ndarray]:
    """The 30 paper samples and the calibration images (specs/networks/mnist_samples.npz)."""
    return dict(np.load(os.path.join(NETWORKS, "mnist_samples.npz")))


def start(doc: str, script: str) -> tuple[np.random.Generator, "Writer"]:
    """Parse ``SEED [--out DIR]`` (default: the script's folder); the seeded generator and a
    writer for the output folder."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seed", type=int, help="random seed: different seeds give different instance sets")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(script)),
                    help="benchmark folder to write (default: this script's)")
    args = ap.parse_args()
    return np.random.default_rng(args.seed), Writer(args.out)


class Writer:
    """Collects instances, writes each model once, and the two instance lists at the end."""

    def __init__(self, out: str):
        self.out = out
        for sub in ("onnx", "vnnlib"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
            os.makedirs(os.path.join(out, sub))
        self.v1: list[str] = []
        self.v2: list[str] = []
        self.total = 0.0
        self.saved: set[str] = set()

    def model(self, name: str, build: Callable[[], onnx.ModelProto | str]) -> str:
        """Relative path of ``onnx/<name>.onnx``, built on first use (a model or a file to copy)."""
        rel = f"onnx/{name}.onnx"
        if rel not in self.saved:
            made = build()
            dst = os.path.join(self.out, rel)
            if isinstance(made, str):
                shutil.copy(made, dst)
            else:
                onnx.save(made, dst)
            self.saved.add(rel)
        return rel

    def instance(self, name: str, twin: str, float_net: str, quant_net: str, lower, upper, eps: float,
                 outputs: list[int], n_outputs: int, input_shape: list[int], output_shape: list[int],
                 timeout: float) -> None:
        """Write the 1.0 and 2.0 forms of ``|N(x)_i − Q(x)_i| < eps`` for i in ``outputs``."""
        lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        v1 = f"vnnlib/{name}.vnnlib"
        with open(os.path.join(self.out, v1), "w") as f:
            f.write(error_bound_v1(lower, upper, eps, outputs, n_outputs))
        v2 = f"vnnlib/{name}_v2.vnnlib"
        with open(os.path.join(self.out, v2), "w") as f:
            f.write(error_bound_v2(lower, upper, eps, outputs, input_shape, output_shape))
        self.v1.append(f"{twin},{v1},{timeout:g}")
        self.v2.append(f"\"[('N', '{float_net}'), ('Q', '{quant_net}')]\",{v2},{timeout:g}")
        self.total += timeout

    def finish(self) -> None:
        if self.total > MAX_TOTAL_S:
            raise SystemExit(f"timeouts sum to {self.total:.0f} s > {MAX_TOTAL_S} s")
        for fname, rows in (("instances.csv", self.v1), ("instances_v2.csv", self.v2)):
            with open(os.path.join(self.out, fname), "w") as f:
                f.write("\n".join(rows) + "\n")
        print(f"{len(self.v1)} instances (x2 formats), {len(self.saved)} models, "
              f"timeouts {self.total / 3600:.2f} h, in {self.out}")
