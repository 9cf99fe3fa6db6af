"""Quantize the shipped MNIST CNNs with PyTorch's own toolchain and export them as users do.

Needs PyTorch (`pip install torch==2.13.0`), which the verifier itself does not: the exported
files are shipped in specs/networks/mnist_cnn/, so generating the benchmark needs only
onnxruntime. Each float network (`cnn_a.onnx`, `cnn_b.onnx`, written by train_mnist_cnn.py) is
rebuilt as its PyTorch module with the same weights, quantized post-training by
`torch.ao.quantization` FX graph mode (the x86 qconfig: per-channel int8 weights, uint8
activations with observers after every Relu), calibrated on MNIST test images 9000–9299 (never
property centres), and exported by `torch.onnx.export` (TorchScript exporter, opset 17): a QDQ
model with PyTorch's patterns (a Relu between a dequantize and the next quantize, Cast nodes
around the codes).

    python scripts/quantize_mnist_cnn_torch.py
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from train_mnist_cnn import OUT, _mnist, _models  # noqa: E402


def main() -> None:
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    x, y = _mnist()
    calib = torch.from_numpy(x[9000:9300])
    for name, model in _models(torch).items():
        src = onnx.load(os.path.join(OUT, f"{name}.onnx"))
        state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in src.graph.initializer}
        for k, v in model.state_dict().items():  # BatchNorm's running statistics too
            if k not in state and k.endswith("num_batches_tracked"):
                state[k] = v
        model.load_state_dict(state)
        model.eval()
        example = (torch.zeros(1, 1, 28, 28),)
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), example)
        with torch.no_grad():
            for i in range(0, len(calib), 50):
                prepared(calib[i:i + 50])
        quantized = convert_fx(prepared)
        with torch.no_grad():
            acc = float((quantized(torch.from_numpy(x[8000:9000])).argmax(1).numpy() == y[8000:9000]).mean())
        path = os.path.join(OUT, f"{name}_torch_int8.onnx")
        torch.onnx.export(quantized, example, path, input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False)
        print(f"{name}: torch.ao int8 held-out accuracy {acc:.3f} (images 8000-8999) -> {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
