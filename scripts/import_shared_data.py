"""Copy what the benchmarks need from the shared data folder into specs/networks (committed).

- qebverif/*.npz: the float weights (W{k}, b{k}, float32) and meta of the 49 QEBVerif networks;
- qebverif_reference/*.npz: QEBVerif's own fixed-point integers of the same networks (kept apart:
  tests compare our quantiser against them, nothing else reads them);
- mnist/: the MNIST test set (IDX files), for the float-accuracy check against the paper;
- acasxu/*.onnx: the 45 VNN-COMP ACAS Xu networks (float models the tests quantise and load);
- mnist_samples.npz: the 30 paper sample images and labels, plus 200 calibration images that
  are never used as centres;
- acasxu/prop_{1..10}.vnnlib: the VNN-COMP ACAS Xu properties (their input regions are used).

    python scripts/import_shared_data.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import shutil

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PAPER_IDS = [3236, 5656, 7219, 7098, 3825, 521, 9886, 7389, 3064, 4544, 7773, 1340, 7894, 8463, 6930,
             2898, 2190, 1866, 914, 5574, 3770, 3016, 6395, 2897, 8541, 5082, 3712, 150, 2486, 3986]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    args = ap.parse_args()
    out = os.path.join(ROOT, "specs", "networks")
    os.makedirs(os.path.join(out, "qebverif"), exist_ok=True)
    os.makedirs(os.path.join(out, "acasxu"), exist_ok=True)
    os.makedirs(os.path.join(out, "qebverif_reference"), exist_ok=True)
    os.makedirs(os.path.join(out, "mnist"), exist_ok=True)
    for path in sorted(glob.glob(os.path.join(args.shared, "qebverif", "*.npz"))):
        z = np.load(path)
        keep = {k: z[k] for k in z.files if k in ("n_layers", "meta") or ("_q" not in k)}
        np.savez_compressed(os.path.join(out, "qebverif", os.path.basename(path)), **keep)
        ref = {k: z[k] for k in z.files if "_q" in k}
        np.savez_compressed(os.path.join(out, "qebverif_reference", os.path.basename(path)), **ref)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(os.path.join(args.shared, "mnist", name), os.path.join(out, "mnist"))
    for path in sorted(glob.glob(os.path.join(args.shared, "acasxu", "*.onnx"))):
        shutil.copy(path, os.path.join(out, "acasxu"))
    with gzip.open(os.path.join(args.shared, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(args.shared, "mnist", "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    calib = [i for i in range(9000, 9300) if i not in PAPER_IDS][:200]
    np.savez_compressed(os.path.join(out, "mnist_samples.npz"), paper_ids=np.array(PAPER_IDS),
                        paper_images=images[PAPER_IDS], paper_labels=labels[PAPER_IDS],
                        calib_ids=np.array(calib), calib_images=images[calib])
    for i in range(1, 11):
        shutil.copy(os.path.join(args.shared, "acasxu", f"prop_{i}.vnnlib"), os.path.join(out, "acasxu"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
