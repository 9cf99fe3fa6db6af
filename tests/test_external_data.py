"""ONNX files whose weights live in a separate file (``save_as_external_data``): the weights are
read beside the model, never from the working directory. A decoy ``w.data`` in the working
directory used to replace the real weights and turn a ``sat`` instance into ``unsat``."""

import gzip
import shutil
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from vnncomp_qeb.io.vnnlib_writer import error_bound_v1


def _external_model(folder, W):
    graph = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"])], "ext",
                         [h.make_tensor_value_info("x", T.FLOAT, [1, 2])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 2])], [nh.from_array(W, "W")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8)
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.data", size_threshold=0)
    return folder / "m.onnx"


def _verify(model, spec, cwd):
    proc = subprocess.run([sys.executable, "-m", "vnncomp_qeb", "verify", str(model), str(spec), "--timeout", "20"],
                          cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    return proc.stdout.split("\n", 1)[0], proc.stderr


def test_external_weights_come_from_the_models_folder(tmp_path):
    model_dir, decoy_dir = tmp_path / "model", tmp_path / "elsewhere"
    model_dir.mkdir()
    decoy_dir.mkdir()
    model = _external_model(model_dir, (1000 * np.eye(2)).astype(np.float32))
    assert (model_dir / "w.data").exists() and not onnx.load(str(model), load_external_data=False).graph.initializer[0].raw_data
    (decoy_dir / "w.data").write_bytes(np.zeros((2, 2), np.float32).tobytes())  # same size, other weights
    spec = tmp_path / "p.vnnlib"  # |Y_0| < 100 over x ∈ [0.5, 1]²: Y_0 = 1000·x_0 ≥ 500 violates
    spec.write_text(error_bound_v1(np.full(2, 0.5), np.ones(2), 100.0, [0], 2))
    verdict, err = _verify(model, spec, decoy_dir)
    assert verdict == "sat", err
    with open(model, "rb") as f, gzip.open(model_dir / "m.onnx.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    verdict, err = _verify(model_dir / "m.onnx.gz", spec, decoy_dir)  # the same rule for .gz
    assert verdict == "sat", err
    (model_dir / "w.data").unlink()
    verdict, err = _verify(model, spec, decoy_dir)
    assert verdict == "error" and "external data" in err and "Traceback" not in err, err
