"""The 8×8 handwritten digits bundled with scikit-learn: real images, no download.

1797 grey-level images of the digits 0–9 (pixel values 0..16), small enough that
the exact Fisher of a small network fits in memory.  This is the default dataset
of the demos and notebooks.

    x : (N, 1, 8, 8)  or (N, 64) with flatten=True
    y : (N,)          int64 in [0, 10)
"""

from __future__ import annotations

import numpy as np

from kfac_ref.data.dataset import Dataset, check_float_dtype, standardise

NUM_CLASSES = 10


def stratified_split(y: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train_idx, val_idx) with each class split in the same proportion.

    For every class c with n_c samples, round(val_fraction · n_c) of them (at least
    one, and at least one left for training) go to validation, chosen by `rng`.
    Both index arrays are then shuffled so the classes are interleaved.
    """
    train_parts, val_parts = [], []
    for c in np.unique(y):
        idx_c = rng.permutation(np.flatnonzero(y == c))  # (n_c,)
        n_val_c = int(np.clip(round(val_fraction * idx_c.size), 1, idx_c.size - 1))
        val_parts.append(idx_c[:n_val_c])
        train_parts.append(idx_c[n_val_c:])
    train_idx = rng.permutation(np.concatenate(train_parts))  # (N_train,)
    val_idx = rng.permutation(np.concatenate(val_parts))  # (N_val,)
    return train_idx, val_idx


def load_digits(
    val_fraction: float = 0.2, seed=0, flatten: bool = False, dtype=np.float64, standardise_pixels: bool = True
) -> Dataset:
    """The scikit-learn digits, split and standardised.

    1. Split 1797 images into training and validation, stratified by class, with
       np.random.default_rng(seed) (same seed → same split).
    2. Standardise each of the 64 pixels with the training mean and std
       (pixels constant over the training set are divided by 1).  With
       ``standardise_pixels=False`` the pixels are only scaled to [0, 1] (value / 16).

    Returns a Dataset with x (N, 1, 8, 8), or (N, 64) if flatten, of `dtype`.
    """
    from sklearn.datasets import load_digits as _sklearn_digits  # (slow import, only here)

    if not isinstance(val_fraction, (float, int)) or not 0 < val_fraction < 1:
        raise ValueError(f"load_digits: val_fraction must lie in (0, 1), got {val_fraction!r}")
    dtype = check_float_dtype(dtype, "load_digits")
    bunch = _sklearn_digits()
    x = np.asarray(bunch.data, dtype=np.float64)  # (1797, 64), values 0..16
    y = np.asarray(bunch.target, dtype=np.int64)  # (1797,)

    train_idx, val_idx = stratified_split(y, val_fraction, np.random.default_rng(seed))
    if standardise_pixels:
        x_train, x_val = standardise(x[train_idx], x[val_idx], axis=0)  # per-pixel μ, σ
    else:
        x_train, x_val = x[train_idx] / 16, x[val_idx] / 16  # in [0, 1]

    if not flatten:
        x_train = x_train.reshape(-1, 1, 8, 8)  # (N_train, 1, 8, 8)
        x_val = x_val.reshape(-1, 1, 8, 8)  # (N_val, 1, 8, 8)
    return Dataset(
        "digits", x_train.astype(dtype), y[train_idx], x_val.astype(dtype), y[val_idx], num_classes=NUM_CLASSES
    )
