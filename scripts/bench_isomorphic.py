"""Float16 deployment as a VNN-LIB 2.0 question, asked two ways on real networks.

For an ACAS Xu network and the MNIST P1 network (QEBVerif's weights), over a small box around a
point: ``max-error`` brackets the largest output difference between the float32 model and its
float16 conversion; then the error-bound query ``|Y − Y16|_i ≥ ε`` is decided at ε below the
bracket (expect sat) and above it (expect unsat), once as ``(isomorphic-to N)`` declared at float16
(the verifier converts the file) and once as two networks with the converted file written out
(onnxconverter-common, ``keep_io_types=False``). Prints verdicts and times.

    python scripts/bench_isomorphic.py [--timeout 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from vnncomp_qeb.io.instance import load_instance  # noqa: E402
from vnncomp_qeb.max_error import max_error  # noqa: E402
from vnncomp_qeb.portfolio import verify  # noqa: E402


def _n(v) -> str:  # decimal notation (the grammar has no exponents)
    return np.format_float_positional(float(v), trim="0", unique=True)


def _query(lo, hi, outputs, eps, iso: bool, in_shape, out_shape) -> str:
    def idx(i, shape):
        return ",".join(str(int(v)) for v in np.unravel_index(i, shape))

    ish, osh = ",".join(map(str, in_shape)), ",".join(map(str, out_shape))
    # isomorphic-to: declared at float16, the verifier converts N; two files: the float16 file is
    # given, declared at float32 (the reference parser refuses arithmetic across element types)
    second, qtype = ("(isomorphic-to N)", "float16") if iso else ("", "float32")
    lines = ["(vnnlib-version <2.0>)",
             f"(declare-network N (declare-input X float32 [{ish}]) (declare-output Y float32 [{osh}]))",
             f"(declare-network Q {second} (declare-input XQ {qtype} [{ish}]) (declare-output YQ {qtype} [{osh}]))"]
    lines.append("(assert (and " + " ".join(f"(>= X[{idx(i, in_shape)}] {_n(a)}) (<= X[{idx(i, in_shape)}] {_n(b)})"
                                             for i, (a, b) in enumerate(zip(lo, hi))) + "))")
    lines.append("(assert (and " + " ".join(f"(== X[{idx(i, in_shape)}] XQ[{idx(i, in_shape)}])"
                                             for i in range(len(lo))) + "))")
    rows = []
    for j in outputs:
        y, yq = f"Y[{idx(j, out_shape)}]", f"YQ[{idx(j, out_shape)}]"
        rows += [f"(>= (- {y} {yq}) {_n(eps)})", f"(<= (- {y} {yq}) {_n(-eps)})"]
    lines.append("(assert (or " + " ".join(rows) + "))")
    return "\n".join(lines) + "\n"


def _shapes(path):
    m = onnx.load(path)
    dims = lambda vi: [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    return dims(m.graph.input[0]), dims(m.graph.output[0])


def run(name, path, lo, hi, outputs, timeout, tmp):
    from onnxconverter_common import float16

    f16 = os.path.join(tmp, name + "_f16.onnx")
    onnx.save(float16.convert_float_to_float16(onnx.load(path), keep_io_types=False), f16)
    in_shape, out_shape = _shapes(path)
    spec = os.path.join(tmp, name + "_bracket.vnnlib")
    with open(spec, "w") as f:
        f.write(_query(lo, hi, outputs, 1.0, False, in_shape, out_shape))
    me = max_error(load_instance(spec, {"N": path, "Q": f16}), timeout, log=lambda _: None)
    print(f"{name}: max |N − N16| over the box in [{me.lower:.4g}, {me.upper:.4g}] (max-error, {me.time:.1f} s)")
    for eps, expect in ((0.9 * me.lower, "sat"), (1.5 * me.upper, "unsat")):
        for form, nets, iso in (("isomorphic-to", {"N": path}, True), ("two files", {"N": path, "Q": f16}, False)):
            q = os.path.join(tmp, f"{name}_{form[:3]}.vnnlib")
            with open(q, "w") as f:
                f.write(_query(lo, hi, outputs, float(eps), iso, in_shape, out_shape))
            t = time.monotonic()
            out = verify(load_instance(q, nets), timeout, log=lambda _: None)
            print(f"  eps={eps:.4g} ({expect} expected)  {form:14s} {out.verdict:8s} {time.monotonic() - t:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    from benchgen import mnist_networks, mnist_samples

    from vnncomp_qeb.io.mlp_writer import mlp_model

    with tempfile.TemporaryDirectory() as tmp:
        acas = os.path.join(ROOT, "specs", "networks", "acasxu", "ACASXU_run2a_1_1_batch_2000.onnx")
        c = np.array([0.6, -0.3, 0.2, 0.4, -0.4])
        run("acasxu_1_1", acas, c - 0.02, c + 0.02, range(5), args.timeout, tmp)
        pname, net = next(iter(mnist_networks()))
        model = mlp_model(net.weights, net.biases, pname)
        mpath = os.path.join(tmp, "mnist_p1.onnx")
        onnx.save(model, mpath)
        x0 = mnist_samples()["paper_images"][0].astype(np.float64).reshape(-1) / 255.0
        run("mnist_P1", mpath, np.clip(x0 - 2 / 255, 0, 1), np.clip(x0 + 2 / 255, 0, 1), range(10), args.timeout, tmp)


if __name__ == "__main__":
    main()
