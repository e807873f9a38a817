"""Small builders shared by the tests (plain functions, no fixtures)."""

from __future__ import annotations

import json

import numpy as np

from kfac_ref import checkpoint, nn
from kfac_ref.backend import to_device
from kfac_ref.params import get_flat_params


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


def trainer_snapshot(trainer):
    """Everything a checkpoint load could change: θ, the whole optimizer state, rng, records, position."""
    arrays: dict = {}
    meta = json.dumps(checkpoint._split(trainer.opt.state_dict(), arrays, "o"), sort_keys=True)
    return (
        get_flat_params(trainer.opt.model).copy(),
        meta,
        {k: v.copy() for k, v in arrays.items()},
        trainer.rng.bit_generator.state,
        list(trainer.history.records),
        trainer.pos,
    )


def assert_trainer_unchanged(trainer, before):
    """The trainer is bit for bit what :func:`trainer_snapshot` saw (a refused load applied nothing)."""
    after = trainer_snapshot(trainer)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1] == before[1]
    assert after[2].keys() == before[2].keys()
    for k in before[2]:
        np.testing.assert_array_equal(after[2][k], before[2][k], err_msg=k)
    assert after[3:] == before[3:]
