"""Small seeded datasets for tests and teaching: no files, fully reproducible.

Every function takes its randomness explicitly, as a np.random.Generator or an
integer seed, and returns plain float64 / int64 NumPy arrays.

    make_classification : x (n, d),       y (n,)
    make_images         : x (n, C, H, W), y (n,)
    make_regression     : x (n, d_in),    y (n, d_out),  W* (d_out, d_in)
    lognormal_regression: x (n, 2),       y (n, 1),      θ* (2,)      [KBH19], docs/math.md §10
"""

from __future__ import annotations

import numpy as np

from ..validate import as_rng, check_allocation, check_positive_int


def _balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n labels, each class appearing ⌊n/K⌋ or ⌈n/K⌉ times, in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)  # (n,)


def make_classification(n: int, d: int, num_classes: int, rng, separation: float = 2.0):
    """Gaussian blobs: x_n = μ_{y_n} + ε_n, μ_k ~ N(0, separation² I), ε_n ~ N(0, I).

    Returns x (n, d) float64 and y (n,) int64 with balanced classes.
    """
    check_positive_int("make_classification", n=n, d=d, num_classes=num_classes)
    check_allocation("make_classification", (n, d), np.float64, what="x")
    rng = as_rng(rng, "make_classification")
    means = separation * rng.standard_normal((num_classes, d))  # (K, d)
    y = _balanced_labels(n, num_classes, rng)  # (n,)
    x = means[y] + rng.standard_normal((n, d))  # (n, d)
    return x, y


def make_images(n: int, channels: int, height: int, width: int, num_classes: int, rng, noise: float = 0.5):
    """Class templates plus noise: x_n = T_{y_n} + noise · ε_n, T_k, ε_n ~ N(0, I).

    Returns x (n, channels, height, width) float64 and y (n,) int64.
    """
    check_positive_int("make_images", n=n, channels=channels, height=height, width=width, num_classes=num_classes)
    check_allocation("make_images", (n, channels, height, width), np.float64, what="x")
    check_allocation("make_images", (num_classes, channels, height, width), np.float64, what="the class templates")
    rng = as_rng(rng, "make_images")
    templates = rng.standard_normal((num_classes, channels, height, width))  # (K, C, H, W)
    y = _balanced_labels(n, num_classes, rng)  # (n,)
    x = templates[y] + noise * rng.standard_normal((n, channels, height, width))  # (n, C, H, W)
    return x, y


def make_regression(n: int, d_in: int, d_out: int, rng, noise: float = 0.1):
    """A linear model with Gaussian noise: y_n = W* x_n + noise · ε_n.

    x_n, ε_n ~ N(0, I); W* ~ N(0, 1/d_in) entrywise, shaped like Linear.weight.
    Returns x (n, d_in), y (n, d_out), true_weight W* (d_out, d_in).
    """
    check_positive_int("make_regression", n=n, d_in=d_in, d_out=d_out)
    check_allocation("make_regression", (n, d_in + d_out), np.float64, what="x and y together")
    rng = as_rng(rng, "make_regression")
    true_weight = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)  # (d_out, d_in)
    x = rng.standard_normal((n, d_in))  # (n, d_in)
    y = x @ true_weight.T + noise * rng.standard_normal((n, d_out))  # (n, d_out)
    return x, y, true_weight


def lognormal_regression(n: int = 1000, seed=0):
    """The empirical-vs-true Fisher toy of [KBH19] (docs/math.md §10).

        x_n = [1, z_n],  z_n ~ LogNormal(0, 0.75),  y_n = x_nᵀ θ* + ε_n,  ε_n ~ N(0, 1),  θ* = (2, 2)

    Returns x (n, 2), y (n, 1) and theta_star (2,).
    """
    check_positive_int("lognormal_regression", n=n)
    check_allocation("lognormal_regression", (n, 3), np.float64, what="x and y together")
    rng = as_rng(seed, "lognormal_regression")
    theta_star = np.array([2.0, 2.0])  # (2,)
    z = rng.lognormal(mean=0.0, sigma=0.75, size=n)  # (n,)
    x = np.stack([np.ones(n), z], axis=1)  # (n, 2)
    y = (x @ theta_star + rng.standard_normal(n))[:, None]  # (n, 1)
    return x, y, theta_star
