"""Train the two small MNIST CNNs of specs/mnist_cnn_int8 with PyTorch and export them to ONNX.

Needs PyTorch (`pip install torch==2.13.0`), which the verifier itself does not: the exported
files are shipped in specs/networks/mnist_cnn/, so generating the benchmark needs only
onnxruntime. Data: the MNIST test set in specs/networks/mnist (the only MNIST set this project
holds); images 0–7999 train, 8000–8999 measure accuracy, and neither the paper's 30 samples (the
property centres) nor 9000–9299 (calibration) are trained on.

    python scripts/train_mnist_cnn.py [--epochs 4] [--seed 0]

- cnn_a: Conv(1→4, 3×3, stride 2) · Relu · Conv(4→8, 3×3, stride 2) · Relu · Flatten · Gemm(288→10)
- cnn_b: Conv(1→4, 3×3, pad 1) · BatchNorm · Relu · MaxPool(2) · Conv(4→8, 3×3, stride 2) · Relu ·
  Flatten · Gemm(288→10)
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "specs", "networks", "mnist_cnn")


def _mnist():
    folder = os.path.join(ROOT, "specs", "networks", "mnist")
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def _models(torch):
    nn = torch.nn
    a = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2), nn.ReLU(),
                      nn.Flatten(), nn.Linear(288, 10))
    b = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(4, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(288, 10))
    return {"cnn_a": a, "cnn_b": b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from benchgen import mnist_samples

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    x, y = _mnist()
    keep = np.setdiff1d(np.arange(8000), mnist_samples()["paper_ids"])
    xt, yt = torch.from_numpy(x[keep]), torch.from_numpy(y[keep])
    xv, yv = torch.from_numpy(x[8000:9000]), torch.from_numpy(y[8000:9000])
    os.makedirs(OUT, exist_ok=True)
    for name, model in _models(torch).items():
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(args.epochs):
            model.train()
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(xv).argmax(1) == yv).float().mean())
        path = os.path.join(OUT, f"{name}.onnx")
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), path, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False, do_constant_folding=False)  # keep BatchNorm
        print(f"{name}: held-out accuracy {acc:.3f} (images 8000-8999) -> {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
