"""Adam against a brute-force loop of PyTorch's published update, and against torch.optim.Adam itself."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import nn, optim
from kfac_ref.gradcheck import rel_error
from tests.helpers import classification_batch, tiny_mlp

SETTINGS = [
    {},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
    {"lr": 0.01, "amsgrad": True},
]


def reference_adam(grad_at, theta, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                   amsgrad=False, decoupled_weight_decay=False):  # fmt: skip
    """PyTorch's documented Adam/AdamW algorithm, one parameter at a time, in plain Python floats."""
    theta = [float(t) for t in theta]
    p = len(theta)
    m, v, vmax = [0.0] * p, [0.0] * p, [0.0] * p
    for t in range(1, steps + 1):
        g = [float(gi) for gi in grad_at(np.array(theta))]
        for i in range(p):
            if weight_decay and decoupled_weight_decay:
                theta[i] *= 1 - lr * weight_decay
            elif weight_decay:
                g[i] += weight_decay * theta[i]
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g[i]
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g[i] * g[i]
            m_hat = m[i] / (1 - betas[0] ** t)
            if amsgrad:
                vmax[i] = max(vmax[i], v[i])
                v_hat = vmax[i] / (1 - betas[1] ** t)
            else:
                v_hat = v[i] / (1 - betas[1] ** t)
            theta[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(theta)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(s) or "defaults")
def test_ten_adam_steps_equal_the_brute_force_loop(settings, rng):
    model, loss = tiny_mlp("tanh", sizes=(4, 5, 3)), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 8, (4,), 3)
    theta0 = K.get_flat_params(model).copy()

    def grad_at(theta):
        probe = tiny_mlp("tanh", sizes=(4, 5, 3))
        K.set_flat_params(probe, theta)
        return K.batch_grad(probe, loss, x, y)

    opt = optim.Adam(model, loss, **settings)
    for _ in range(10):
        opt.step(x, y)
    ref = reference_adam(grad_at, theta0, 10, **settings)
    assert rel_error(K.get_flat_params(model), ref) <= 1e-12
    assert np.linalg.norm(ref - theta0) > 1e-3 * min(1, settings.get("lr", 1e-3) * 100)  # it moved


def test_adam_matches_torch_optim_adam():
    """The same ten steps through torch.optim.Adam (skipped where torch is not installed)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    loss = nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 8, (4,), 3)
    known = inspect.signature(torch.optim.Adam).parameters
    for settings in SETTINGS:
        if "decoupled_weight_decay" in settings and "decoupled_weight_decay" not in known:
            continue  # an older torch: AdamW is another class there
        ours = tiny_mlp("tanh", sizes=(4, 5, 3))
        theirs = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
        torch.nn.utils.vector_to_parameters(torch.from_numpy(K.get_flat_params(ours).copy()), theirs.parameters())
        opt = optim.Adam(ours, loss, **settings)
        topt = torch.optim.Adam(theirs.parameters(), **settings)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(10):
            opt.step(x, y)
            topt.zero_grad()
            torch.nn.functional.cross_entropy(theirs(xt), yt).backward()
            topt.step()
        got = torch.nn.utils.parameters_to_vector(theirs.parameters()).detach().numpy()
        assert rel_error(K.get_flat_params(ours), got) <= 1e-12, settings


def test_adam_refuses_bad_hyper_parameters():
    model, loss = tiny_mlp(), nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(model, loss, betas=(0.9,))
    with pytest.raises(ValueError, match="β₂"):
        optim.Adam(model, loss, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps"):
        optim.Adam(model, loss, eps=-1.0)


def test_adam_resumes_from_its_state_dict(rng):
    """Three steps, a state_dict round trip into a fresh optimizer, two more = five uninterrupted steps."""
    loss = nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 8, (4,), 3)
    a, b = tiny_mlp("tanh", sizes=(4, 5, 3)), tiny_mlp("tanh", sizes=(4, 5, 3))
    opt_a = optim.Adam(a, loss, lr=0.01, amsgrad=True)
    for _ in range(5):
        opt_a.step(x, y)
    opt_b = optim.Adam(b, loss, lr=0.01, amsgrad=True)
    for _ in range(3):
        opt_b.step(x, y)
    resumed = optim.Adam(b, loss, lr=0.01, amsgrad=True)
    resumed.load_state_dict(opt_b.state_dict())
    for _ in range(2):
        resumed.step(x, y)
    np.testing.assert_array_equal(K.get_flat_params(b), K.get_flat_params(a))
