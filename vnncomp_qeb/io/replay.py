"""Replay a candidate counterexample with onnxruntime on the original file(s).

This is the only judge of a ``sat``: the organisers cast the input to the model's input type,
check it against the box, run onnxruntime on CPU with default options and test the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from vnncomp_qeb.io.instance import Instance
from vnncomp_qeb.io.model_views import View, run_view
from vnncomp_qeb.io.ort_session import ORT_DTYPES, session

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16}


@dataclass
class Replay:
    """Outcome of a replay: ``ok`` when onnxruntime confirms the violation."""

    ok: bool
    x: np.ndarray  # the input as the model receives it (its own dtype), flat
    y: np.ndarray  # the joint output onnxruntime computed, float64, flat
    margin: float  # how far inside the unsafe set (best case/polytope); < 0 outside
    case: int = -1


def model_input(path: str) -> tuple[str, list[int], type]:
    """Name, shape (batch 1) and numpy dtype of the model's one real input."""
    sess = session(path)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dtype = ORT_DTYPES.get(inp.type, np.float32)
    return inp.name, shape, dtype


def run_onnx(path: str, x_flat: np.ndarray) -> np.ndarray:
    """All outputs of the model at ``path`` on one flat input, flattened and concatenated."""
    return run_view(View(path), x_flat)


def snap_into_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype=np.float32) -> np.ndarray | None:
    """Cast ``x`` to ``dtype`` so that every element lies in [lower, upper] compared in float64;
    None when the box holds no value of that type in some coordinate."""
    x = np.clip(np.asarray(x, dtype=np.float64), lower, upper)
    xt = x.astype(dtype)
    low = xt.astype(np.float64) < lower
    xt[low] = np.nextafter(xt[low], dtype(np.inf))
    high = xt.astype(np.float64) > upper
    xt[high] = np.nextafter(xt[high], dtype(-np.inf))
    v = xt.astype(np.float64)
    if np.any(v < lower) or np.any(v > upper):
        return None
    return xt


def input_type(inst: Instance) -> type:
    """The numpy type the joint input is fed in (the finest of the networks' input types)."""
    from vnncomp_qeb.io.instance import feed_type

    return feed_type(inst.views.values())


def replay(inst: Instance, x: np.ndarray) -> Replay:
    """Cast, box-check and run the candidate ``x`` (flat joint input) through onnxruntime."""
    spec = inst.spec
    dtype = input_type(inst)
    best = Replay(False, np.asarray(x, dtype=dtype), np.full(spec.n_outputs, np.nan), -np.inf)
    for ci, case in enumerate(spec.cases):
        xt = snap_into_box(x, case.lower, case.upper, dtype)
        if xt is None:
            continue
        y = joint_output(inst, xt)
        margin = float(case.margin(y[None])[0])
        ok = bool(case.unsafe(y[None])[0])
        if ok or margin > best.margin:
            best = Replay(ok, xt, y, margin, ci)
        if ok:
            break
    return best


def joint_output(inst: Instance, x: np.ndarray) -> np.ndarray:
    """The joint output vector of all networks on the joint input ``x``, via onnxruntime."""
    spec = inst.spec
    if spec.version == "1.0":
        return run_onnx(inst.networks[spec.networks[0]], x)
    y = np.empty(spec.n_outputs)
    for name in spec.networks:
        y[spec.observed_index(name)] = run_view(inst.views[name], np.asarray(x)[spec.input_index(name)])
    if spec.input_copy is not None:  # constraints read on the inputs as fed
        y[spec.input_copy] = np.asarray(x, dtype=np.float64)
    first = spec.n_outputs - len(spec.products)
    for k, factors in enumerate(spec.products):  # products in the property, in float64
        y[first + k] = np.prod(y[list(factors)])
    return y
