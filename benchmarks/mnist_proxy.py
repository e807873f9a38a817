"""An MNIST-format stand-in: 28×28 IDX files made from scikit-learn's 8×8 digits.

This machine cannot download MNIST, but the comparison on "a larger MNIST-format dataset
of 28×28 images" is part of the project's claims.  This script writes four IDX files with
MNIST's names, sizes and format (uint8 images 28×28, uint8 labels; 60,000 training and
10,000 test images by default) so that

    python benchmarks/mnist_proxy.py --out data/mnist-proxy
    kfac-ref compare --dataset mnist --data-dir data/mnist-proxy --optimizers sgd,kfac --epochs 1

runs exactly the code path a user with the real files runs (loader, 1×28×28 ConvNet, one
epoch = 58 iterations at batch 1024).  It is a proxy, not MNIST: every image is one of the
1797 digits (train and test drawn from disjoint digits), upsampled to 20×20 (bilinear), placed
at a random offset in a 28×28 frame (MNIST centres digits in 20×20 boxes), with a random
contrast and pixel noise.  Numbers measured on it say how the methods behave on 28×28 inputs
at MNIST's scale; they are not MNIST results.

    images : (N, 28, 28) uint8 in 0..255
    labels : (N,)        uint8 in 0..9
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

from kfac_ref.io import write_bytes


def upsample(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, h, w) images to (N, size, size), pixel centres aligned."""
    n, h, w = img.shape
    rows = (np.arange(size) + 0.5) * h / size - 0.5  # (size,) source coordinates
    cols = (np.arange(size) + 0.5) * w / size - 0.5
    r0 = np.clip(np.floor(rows).astype(int), 0, h - 1)
    c0 = np.clip(np.floor(cols).astype(int), 0, w - 1)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr = np.clip(rows - r0, 0, 1)[:, None]  # (size, 1)
    fc = np.clip(cols - c0, 0, 1)[None, :]  # (1, size)
    top = img[:, r0][:, :, c0] * (1 - fc) + img[:, r0][:, :, c1] * fc  # (N, size, size)
    bottom = img[:, r1][:, :, c0] * (1 - fc) + img[:, r1][:, :, c1] * fc
    return top * (1 - fr) + bottom * fr


def make_images(digits: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator):
    """n images (n, 28, 28) uint8 and labels (n,) uint8 from the (M, 8, 8) digits in 0..16."""
    pick = rng.integers(0, digits.shape[0], size=n)
    small = upsample(digits[pick] / 16.0, 20)  # (n, 20, 20) in [0, 1]
    small *= rng.uniform(0.7, 1.0, size=(n, 1, 1))  # contrast
    out = np.zeros((n, 28, 28))
    dr, dc = rng.integers(0, 9, size=n), rng.integers(0, 9, size=n)  # offsets 0..8 (centred at 4)
    for i in range(n):
        out[i, dr[i] : dr[i] + 20, dc[i] : dc[i] + 20] = small[i]
    out += rng.normal(0.0, 0.05, size=out.shape)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), labels[pick].astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """One uint8 IDX file (magic 0x08 = unsigned byte, then the dimensions, big-endian), gzipped."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    write_bytes(path, gzip.compress(header + np.ascontiguousarray(array).tobytes()))  # atomically


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the four .gz IDX files")
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(d.target))
    cut = int(0.8 * len(order))  # test images come from digits never used for training images
    train_idx, test_idx = order[:cut], order[cut:]
    images = d.images.astype(np.float64)
    args.out.mkdir(parents=True, exist_ok=True)
    for prefix, idx, n in (("train", train_idx, args.n_train), ("t10k", test_idx, args.n_test)):
        x, y = make_images(images[idx], d.target[idx], n, rng)
        write_idx(args.out / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(args.out / f"{prefix}-labels-idx1-ubyte.gz", y)
        print(f"{prefix}: {x.shape} images, labels {np.bincount(y, minlength=10).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
