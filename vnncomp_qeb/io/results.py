"""Verdict words and counterexample files in the VNN-COMP formats."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from vnncomp_qeb.spec import Spec

SAT, UNSAT, TIMEOUT, UNKNOWN, ERROR = "sat", "unsat", "timeout", "unknown", "error"
VERDICTS = (SAT, UNSAT, TIMEOUT, UNKNOWN, ERROR)


def _num(v) -> str:
    # repr of the float64 that equals the value: parses back to the same float32/float64
    return repr(float(v))


def counterexample_v1(x: np.ndarray, y: np.ndarray) -> str:
    """``((X_0 v)\\n (X_1 v) ... (Y_m v))``: every input, then every output."""
    items = [f"(X_{i} {_num(v)})" for i, v in enumerate(np.ravel(x))]
    items += [f"(Y_{j} {_num(v)})" for j, v in enumerate(np.ravel(y))]
    return "(" + "\n ".join(items) + ")"


def counterexample_v2(spec: Spec, x: np.ndarray, y: np.ndarray) -> str:
    """One ``NAME TYPE [d1,d2]`` header per declared variable in order, then its values."""
    lines = []
    for v in spec.variables:
        values = (np.ravel(x) if v.kind == "input" else np.ravel(y))[v.index]
        lines.append(f"{v.name} {v.dtype} [{','.join(str(d) for d in v.shape)}]")
        lines.extend(_num(val) for val in values)
    return "\n".join(lines)


def counterexample(spec: Spec, x: np.ndarray, y: np.ndarray) -> str:
    """The counterexample text in the format of the property's VNN-LIB version."""
    return counterexample_v1(x, y) if spec.version == "1.0" else counterexample_v2(spec, x, y)


def write_result(path: str, verdict: str, witness: str | None = None) -> None:
    """Write the verdict on line 1 (and a witness after it) atomically: a reader never sees a
    half-written file, even if this process is killed."""
    assert verdict in VERDICTS, verdict
    text = verdict + "\n" + (witness + "\n" if witness else "")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".result-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_counterexample(text: str, spec: Spec) -> np.ndarray:
    """The flat joint input of a results file's counterexample (lines after the verdict)."""
    from vnncomp_qeb.errors import QebError
    from vnncomp_qeb.io.sexpr import parse_sexprs

    x = np.full(spec.n_inputs, np.nan)
    if spec.version == "1.0":
        (pairs,) = parse_sexprs(text) or (None,)
        for pair in pairs or []:
            name, value = str(pair[0]), float(pair[1])
            if name.startswith("X_"):
                x[int(name[2:])] = value
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        inputs = {v.name: v for v in spec.variables if v.kind == "input"}
        i = 0
        while i < len(lines):
            name = lines[i].split()[0]
            var = next((v for v in spec.variables if v.name == name), None)
            if var is None:
                raise QebError(f"counterexample names unknown variable '{name}'")
            values = [float(v) for v in lines[i + 1:i + 1 + var.index.size]]
            if name in inputs:
                x[var.index] = values
            i += 1 + var.index.size
    if np.isnan(x).any():
        raise QebError("the counterexample does not assign every input")
    return x
