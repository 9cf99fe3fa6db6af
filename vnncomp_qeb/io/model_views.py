"""A network as a VNN-LIB 2.0 query sees it: a file, possibly at another element type (a network
declared ``isomorphic-to`` another at float16), observed at its outputs and at named hidden
tensors. The same view gives the IR graph the analyses read and the onnxruntime session that
replays a witness, so both see the same function."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnx

from vnncomp_qeb.errors import ModelError
from vnncomp_qeb.io.ort_session import ORT_DTYPES, ort_session, session


@dataclass(frozen=True)
class View:
    """``path`` read as is, or converted to ``precision`` (float16), with the ONNX tensors
    ``hidden`` observed after its outputs."""

    path: str
    precision: str | None = None
    hidden: tuple[str, ...] = ()

    @property
    def plain(self) -> bool:
        return self.precision is None and not self.hidden


@lru_cache(maxsize=16)
def view_model(view: View) -> onnx.ModelProto:
    """The model of ``view``: converted as onnxconverter-common converts a model to float16 (its
    inputs, outputs, weights and activations all float16), with the hidden tensors as outputs."""
    from vnncomp_qeb.io.onnx_loader import read_model

    model = read_model(view.path)
    if view.precision is not None:
        if view.precision != "float16":
            raise ModelError(f"cannot convert the model to {view.precision} (only float16 conversion is built)",
                             path=view.path)
        from onnxconverter_common import float16

        try:
            model = float16.convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=False)
        except Exception as exc:
            raise ModelError(f"cannot convert the model to float16 ({type(exc).__name__}: {exc})",
                             path=view.path) from exc
    if view.hidden:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        known = {n for node in model.graph.node for n in node.output}
        for name in view.hidden:
            if name not in known:
                raise ModelError(f"hidden tensor '{name}' is not computed by any node", path=view.path)
            if name not in {o.name for o in model.graph.output}:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model


def view_session(view: View):
    """The onnxruntime session of ``view`` (the file's own for a plain view)."""
    return session(view.path) if view.plain else _derived_session(view)


@lru_cache(maxsize=16)
def _derived_session(view: View):
    return ort_session(view_model(view).SerializeToString())


def input_dtype(view: View) -> type:
    """numpy type of the view's (first) input."""
    return ORT_DTYPES.get(view_session(view).get_inputs()[0].type, np.float32)


def run_view(view: View, x_flat: np.ndarray) -> np.ndarray:
    """The view's outputs, then its hidden tensors, on one flat input (several model inputs
    read consecutive slices of it, in the graph's order), flattened and concatenated."""
    sess = view_session(view)
    feed, start = {}, 0
    x_flat = np.asarray(x_flat).reshape(-1)
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        size = int(np.prod(shape, dtype=np.int64))
        dtype = ORT_DTYPES.get(inp.type, np.float32)
        feed[inp.name] = np.asarray(x_flat[start:start + size], dtype=dtype).reshape(shape)
        start += size
    outs = sess.run(None, feed)
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])
