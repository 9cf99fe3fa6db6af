"""onnxruntime sessions: the one judge of what a model computes (CPU, default options)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vnncomp_qeb.errors import ModelError

# onnxruntime's tensor type names → numpy dtypes of the inputs we feed
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def ort_session(model: str | bytes):
    """An onnxruntime CPU session with default options (as the organisers run it) for a path or
    a serialized model; raises :class:`ModelError` with onnxruntime's reason when it cannot."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        reason = " ".join(str(exc).split())
        raise ModelError(f"onnxruntime cannot load this model: {reason}",
                         path=model if isinstance(model, str) else None) from None


@lru_cache(maxsize=16)
def session(path: str):
    """The (cached) session for the model file at ``path``."""
    if path.endswith(".gz"):
        # decompressed in memory, with any external data read beside the .gz file (a session
        # built from bytes would look for it in the working directory)
        from vnncomp_qeb.io.onnx_loader import read_model

        return ort_session(read_model(path).SerializeToString())
    return ort_session(path)


def check_runnable(path: str) -> None:
    """Raise :class:`ModelError` unless onnxruntime loads the model at ``path``: the semantics
    verified is onnxruntime's, so no verdict is given on a file it cannot run."""
    session(path)
