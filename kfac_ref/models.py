"""Ready-made networks for the examples: the digits MLP, ConvNets and a deep autoencoder.

Each builder takes ``seed`` (initialisation), ``dtype`` and ``device``.
"""

from __future__ import annotations

import numpy as np

from . import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(
    in_features: int,
    hidden=(64,),
    num_classes: int = 10,
    activation: str = "relu",
    *,
    seed: int = 0,
    dtype=np.float64,
    device: str = "cpu",
) -> nn.Sequential:
    """Linear → φ → … → Linear.  Input (N, in_features) → logits (N, num_classes)."""
    act = _activation(activation)
    layers, d = [], in_features
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers, seed=seed).astype(dtype).to(device)


def autoencoder(
    in_features: int,
    widths=(256, 128, 64, 16),
    activation: str = "tanh",
    *,
    seed: int = 0,
    dtype=np.float64,
    device: str = "cpu",
) -> nn.Sequential:
    """A deep autoencoder: encoder D → widths[0] → … → widths[-1] (the code), decoder mirrored → D.

    Every hidden layer is Linear → φ except the code layer, which is linear; the output is D
    logits whose sigmoids are the reconstructed Bernoulli means (pair it with
    :class:`~kfac_ref.nn.SigmoidCrossEntropyLoss`).  [MG15] §13's MNIST network is
    ``widths=(1000, 500, 250, 30)``; the default is a narrower one of the same depth.
    Input (N, D) → logits (N, D).
    """
    act = _activation(activation)
    sizes = (in_features, *widths, *reversed(widths[:-1]))
    code = len(widths)  # index in sizes of the code layer
    layers = []
    for i in range(1, len(sizes)):
        layers.append(nn.Linear(sizes[i - 1], sizes[i]))
        if i != code:
            layers.append(act())
    layers.append(nn.Linear(sizes[-1], in_features))
    return nn.Sequential(*layers, seed=seed).astype(dtype).to(device)


def convnet(
    in_shape=(1, 8, 8),
    channels=(8, 16),
    hidden: int = 32,
    num_classes: int = 10,
    activation: str = "relu",
    *,
    seed: int = 0,
    dtype=np.float64,
    device: str = "cpu",
) -> nn.Sequential:
    """[Conv2d 3×3 (padding 1) → φ → MaxPool 2×2] per channel count → Flatten → Linear → φ → Linear.

    Input (N, C, H, W) → logits (N, num_classes).  With the defaults on the
    8×8 digits this has P ≈ 3k parameters, small enough for the dense exact Fisher.
    """
    act = _activation(activation)
    layers, c = [], in_shape[0]
    for ch in channels:
        layers += [nn.Conv2d(c, ch, 3, padding=1), act(), nn.MaxPool2d(2)]
        c = ch
    layers.append(nn.Flatten())
    model = nn.Sequential(*layers, seed=None)
    flat = model.output_shape(tuple(in_shape))[0]
    tail = (
        [nn.Linear(flat, hidden), act(), nn.Linear(hidden, num_classes)] if hidden else [nn.Linear(flat, num_classes)]
    )
    return nn.Sequential(model, *tail, seed=seed).astype(dtype).to(device)


def conv_tanh_linear(
    image_size: int,
    out_channels: int = 2,
    num_classes: int = 3,
    kernel: int = 3,
    *,
    seed: int = 0,
    dtype=np.float64,
    device: str = "cpu",
) -> nn.Sequential:
    """Conv2d(1→C_out, k×k, no padding) → tanh → Flatten → Linear on all (h − k + 1)² locations.

    Input (N, 1, h, h) → logits (N, num_classes).  The smallest network with one
    convolution and T = (h − k + 1)² output locations, for the KFC examples of
    notebook 04: with h = k there is one location, and with N = 1 KFC is exact
    (docs/math.md §8.3).
    """
    t = image_size - kernel + 1
    if t < 1:
        raise ValueError(f"conv_tanh_linear: image size h = {image_size} is smaller than the kernel k = {kernel}")
    return (
        nn.Sequential(
            nn.Conv2d(1, out_channels, kernel),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(out_channels * t * t, num_classes),
            seed=seed,
        )
        .astype(dtype)
        .to(device)
    )
