"""Safe at the defaults: no learning rate a user routinely tries makes a method diverge.

The property (for K-FAC the KL-clipping safeguard of docs/math.md §6, for NGD and
BlockNGD the same clipping with their κ): ``Cls(model, loss, lr=lr)`` with every
other argument at its default, 60 steps of batch 128 on the digits data, never
gives NaN/Inf and ends below the starting training loss.  The reference is the
starting loss itself, measured on the whole training set.

The dense exact-Fisher NGD rows on the ConvNet take about a second per step, so
those cases are marked ``slow`` (``make test-all``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kfac_ref import models, nn, optim
from kfac_ref.data import BatchStream, load_digits
from kfac_ref.train import evaluate

KFAC_LRS = (0.01, 0.03, 0.1, 0.3, 0.5, 1.0)
NGD_LRS = (0.1, 0.5, 1.0)
STEPS, BATCH = 60, 128


@pytest.fixture(scope="module")
def digits_sets():
    return {"mlp": load_digits(flatten=True), "convnet": load_digits()}


def build(arch):
    return models.mlp(64, hidden=(16,)) if arch == "mlp" else models.convnet()


def run_defaults(name, arch, lr, data):
    model, loss = build(arch), nn.CrossEntropyLoss()
    opt = optim.OPTIMIZERS[name](model, loss, lr=lr)
    start, _ = evaluate(model, loss, data.x_train, data.y_train)
    batches = BatchStream(data.x_train, data.y_train, BATCH, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _ in range(STEPS):
        info = opt.step(*next(batches), rng=rng)
        assert math.isfinite(info["loss"]) and math.isfinite(info["step_norm"])
    end, _ = evaluate(model, loss, data.x_train, data.y_train)
    return start, end


CASES = [("kfac", arch, lr) for arch in ("mlp", "convnet") for lr in KFAC_LRS]
CASES += [
    pytest.param(name, arch, lr, marks=[pytest.mark.slow] if arch == "convnet" else [])
    for name in ("ngd", "block-ngd")
    for arch in ("mlp", "convnet")
    for lr in NGD_LRS
]


@pytest.mark.parametrize("name,arch,lr", CASES)
def test_defaults_never_diverge_and_lower_the_loss(name, arch, lr, digits_sets):
    start, end = run_defaults(name, arch, lr, digits_sets[arch])
    assert math.isfinite(end), f"{name} lr={lr} on the {arch}: the loss became {end}"
    assert end < start, f"{name} lr={lr} on the {arch}: {start:.4f} → {end:.4f}"


def test_without_the_safeguard_large_steps_do_diverge(digits_sets):
    """The control: the property is not trivially true — K-FAC without its safeguard (kl_clip=None)
    at lr = 1 fails it on the ConvNet (it diverges or ends above its start)."""
    data = digits_sets["convnet"]
    model, loss = build("convnet"), nn.CrossEntropyLoss()
    opt = optim.KFAC(model, loss, lr=1.0, momentum=0.9, kl_clip=None)
    start, _ = evaluate(model, loss, data.x_train, data.y_train)
    batches = BatchStream(data.x_train, data.y_train, BATCH, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    end = math.nan
    try:
        for _ in range(STEPS):
            opt.step(*next(batches), rng=rng)
        end, _ = evaluate(model, loss, data.x_train, data.y_train)
    except (FloatingPointError, ValueError, np.linalg.LinAlgError):
        pass  # diverged: the loss or θ became non-finite
    assert not (math.isfinite(end) and end < start)
