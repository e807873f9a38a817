"""Small builders shared by the tests (plain functions, no fixtures)."""

from __future__ import annotations

from kfac_ref import nn
from kfac_ref.backend import to_device


def classification_batch(rng, n, in_shape, num_classes, device="cpu"):
    x = rng.standard_normal((n, *in_shape))
    y = rng.integers(0, num_classes, size=n)
    return to_device(x, device), to_device(y, device)


def regression_batch(rng, n, in_shape, out_dim, device="cpu"):
    x = rng.standard_normal((n, *in_shape))
    y = rng.standard_normal((n, out_dim))
    return to_device(x, device), to_device(y, device)


def tiny_mlp(activation="tanh", sizes=(4, 5, 3), seed=0, bias=True):
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[activation]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers, seed=seed)


def tiny_convnet(seed=0, pool="max", in_shape=(2, 6, 6), num_classes=3, stride=1, padding=1):
    """Conv(3×3) → Tanh → Pool(2) → Conv(2×2) → ReLU → Flatten → Linear."""
    pool_layer = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
    body = nn.Sequential(
        nn.Conv2d(in_shape[0], 3, 3, stride=stride, padding=padding),
        nn.Tanh(),
        pool_layer,
        nn.Conv2d(3, 4, 2),
        nn.ReLU(),
        nn.Flatten(),
        seed=None,
    )
    flat = body.output_shape(tuple(in_shape))[0]
    return nn.Sequential(body, nn.Linear(flat, num_classes), seed=seed)
