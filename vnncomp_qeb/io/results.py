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
    from vnncomp_qeb.errors import QebError

    assert verdict in VERDICTS, verdict
    text = verdict + "\n" + (witness + "\n" if witness else "")
    if not path:
        raise QebError("the results file path is empty")
    if os.path.isdir(path):
        raise QebError("the results file is a folder", path=path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".result-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise QebError(f"cannot write the results file ({exc.strerror or exc})", path=path) from None
    finally:
        if tmp is not None:  # never leave the temporary file behind
            try:
                os.unlink(tmp)
            except OSError:
                pass


def read_counterexample(text: str, spec: Spec) -> np.ndarray:
    """The flat joint input of a results file's counterexample (lines after the verdict)."""
    from vnncomp_qeb.errors import QebError
    from vnncomp_qeb.io.sexpr import parse_sexprs

    try:
        return _read_counterexample(text, spec, parse_sexprs, QebError)
    except QebError:
        raise
    except (ValueError, TypeError, IndexError) as exc:
        raise QebError(f"the results file's counterexample is malformed ({exc})") from None


def _read_counterexample(text, spec, parse_sexprs, QebError) -> np.ndarray:
    x = np.full(spec.n_inputs, np.nan)
    if spec.version == "1.0":
        exprs = parse_sexprs(text)
        if len(exprs) != 1:
            raise QebError("the counterexample must be one list ((X_0 v) ... (Y_m v))")
        for pair in exprs[0]:
            if len(pair) != 2:
                raise QebError(f"expected a pair (NAME value) in the counterexample, got {pair}")
            name, value = str(pair[0]), float(pair[1])
            if name.startswith("X_"):
                k = int(name[2:])
                if not 0 <= k < spec.n_inputs:
                    raise QebError(f"the counterexample assigns {name}, but the property has {spec.n_inputs} inputs")
                x[k] = value
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
            if len(values) != var.index.size:
                raise QebError(f"the counterexample gives {len(values)} values for {name}, which has {var.index.size}")
            if name in inputs:
                x[var.index] = values
            i += 1 + var.index.size
    if np.isnan(x).any():
        raise QebError("the counterexample does not assign every input")
    return x
