import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/models.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# everything the tests read is in the repository (scripts/import_shared_data.py copied it)
NETWORKS = os.path.join(ROOT, "specs", "networks")
ACASXU = os.path.join(NETWORKS, "acasxu")
EXAMPLES = os.path.join(ROOT, "specs", "examples")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def int8_models(model_dir):
    """quantize_static output in every form: {(fmt, per_channel, gemm): path} plus the floats."""
    import models as M

    out = {}
    for gemm in (True, False):
        f = M.float_mlp(model_dir / f"float_{gemm}.onnx", gemm=gemm)
        out[("float", gemm)] = f
        for fmt in ("QDQ", "QOperator"):
            for pc in (False, True):
                out[(fmt, pc, gemm)] = M.quantize(f, model_dir / f"q_{fmt}_{pc}_{gemm}.onnx", fmt, pc)
    return out
