"""Every layer's hand-written backward against central finite differences (float64).

For a layer y = L(x) and a random projection r, φ(x) = Σ r ⊙ L(x) has gradient
∂φ/∂x = Lᵀ r — exactly what ``layer.backward(cache, r)`` returns.  For
parameter layers also ∂φ/∂W̄ = Σ_{n,t} g ā ᵀ with g = r.  Reference: central
differences, relative error ≤ 1e-6 (docs/math.md §8.6).
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import nn
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.gradcheck import numerical_grad, rel_error
from kfac_ref.params import flat_to_wbar

TOL = 1e-6

LAYER_CASES = [
    ("linear", lambda: nn.Linear(5, 3), (5,)),
    ("linear-nobias", lambda: nn.Linear(5, 3, bias=False), (5,)),
    ("conv-s1-p0", lambda: nn.Conv2d(2, 3, 3), (2, 5, 5)),
    ("conv-s1-p1", lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5)),
    ("conv-s2-p1", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 6, 6)),
    ("conv-s2-p0-k2", lambda: nn.Conv2d(3, 2, 2, stride=2), (3, 5, 5)),
    ("conv-s3-p2", lambda: nn.Conv2d(1, 2, 4, stride=3, padding=2), (1, 7, 6)),
    ("conv-nobias", lambda: nn.Conv2d(2, 2, 3, padding=1, bias=False), (2, 4, 4)),
    ("relu", lambda: nn.ReLU(), (7,)),
    ("tanh", lambda: nn.Tanh(), (7,)),
    ("sigmoid", lambda: nn.Sigmoid(), (2, 3, 3)),
    ("maxpool-k2", lambda: nn.MaxPool2d(2), (2, 4, 4)),
    ("maxpool-k3-s2", lambda: nn.MaxPool2d(3, stride=2), (2, 7, 7)),
    ("maxpool-k3-s1-p1", lambda: nn.MaxPool2d(3, stride=1, padding=1), (1, 5, 5)),
    ("maxpool-k2-s1", lambda: nn.MaxPool2d(2, stride=1), (2, 4, 5)),
    ("avgpool-k2", lambda: nn.AvgPool2d(2), (2, 4, 4)),
    ("avgpool-k3-s2-p1", lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 6, 6)),
    ("avgpool-k2-s1", lambda: nn.AvgPool2d(2, stride=1), (1, 5, 4)),
    ("avgpool-k2-s3", lambda: nn.AvgPool2d(2, stride=3), (1, 7, 8)),  # gaps between the windows
    ("flatten", lambda: nn.Flatten(), (2, 3, 2)),
]


def _input(rng, shape, n=3):
    x = rng.standard_normal((n, *shape))
    # Keep ReLU inputs away from the kink and max-pool windows free of near-ties,
    # where finite differences are not meaningful.
    return x + 0.1 * np.sign(x)


@pytest.mark.parametrize("name,make,in_shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_input_grad_matches_finite_differences(name, make, in_shape, device, rng):
    layer = make().to(device)
    x = to_device(_input(rng, in_shape), device)
    out, cache = layer.forward_cached(x)
    r = to_device(rng.standard_normal(out.shape), device)

    analytic = layer.backward(cache, r[None])[0]
    numeric = numerical_grad(lambda z: float((to_numpy(r) * to_numpy(layer.forward(to_device(z, device)))).sum()), x)
    assert analytic.shape == x.shape
    assert rel_error(analytic, numeric) <= TOL


@pytest.mark.parametrize(
    "name,make,in_shape",
    [c for c in LAYER_CASES if c[0].startswith(("linear", "conv"))],
    ids=[c[0] for c in LAYER_CASES if c[0].startswith(("linear", "conv"))],
)
def test_layer_param_grad_matches_finite_differences(name, make, in_shape, device, rng):
    layer = make().to(device)
    x = to_device(_input(rng, in_shape), device)
    out, cache = layer.forward_cached(x)
    r = to_device(rng.standard_normal(out.shape), device)
    g = layer.g_from_grad(r[None])[0]  # (N, T, d_out)
    a_bar = layer.a_bar(cache)  # (N, T, a_dim)
    analytic = np.einsum("ntd,ntk->dk", to_numpy(g), to_numpy(a_bar))  # Σ_n Σ_t g āᵀ

    def phi(theta):
        trial = make().to(device)
        trial.weight = to_device(theta[: layer.weight.size].reshape(layer.weight.shape), device)
        if layer.bias is not None:
            trial.bias = to_device(theta[layer.weight.size :], device)
        return float((to_numpy(r) * to_numpy(trial.forward(x))).sum())

    theta = np.concatenate([to_numpy(v).ravel() for _, v in layer.params()])
    numeric = to_numpy(flat_to_wbar(layer, numerical_grad(phi, theta)))
    assert rel_error(analytic, numeric) <= TOL


@pytest.mark.parametrize("name,make,in_shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_forward_and_forward_cached_agree(name, make, in_shape, rng):
    layer = make()
    x = _input(rng, in_shape)
    out, _ = layer.forward_cached(x)
    np.testing.assert_allclose(layer.forward(x), out, rtol=1e-14, atol=1e-14)
    assert out.shape[1:] == layer.output_shape(in_shape)


def test_conv_matches_direct_convolution_loop(rng):
    """Conv2d forward against the textbook definition, a loop over every index."""
    layer = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    x = rng.standard_normal((2, 2, 5, 6))
    out = layer(x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 3, 3, 3))
    for n in range(2):
        for o in range(3):
            for u in range(3):
                for v in range(3):
                    patch = xp[n, :, 2 * u : 2 * u + 3, 2 * v : 2 * v + 3]
                    ref[n, o, u, v] = (patch * layer.weight[o]).sum() + layer.bias[o]
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_pooling_matches_direct_loop(rng):
    """MaxPool2d (−∞ padding) and AvgPool2d (zeros counted) against explicit loops."""
    x = rng.standard_normal((1, 2, 5, 5))
    xp_max = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    xp_avg = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    mx, av = nn.MaxPool2d(3, stride=2, padding=1)(x), nn.AvgPool2d(3, stride=2, padding=1)(x)
    for c in range(2):
        for u in range(3):
            for v in range(3):
                assert mx[0, c, u, v] == xp_max[0, c, 2 * u : 2 * u + 3, 2 * v : 2 * v + 3].max()
                assert np.isclose(av[0, c, u, v], xp_avg[0, c, 2 * u : 2 * u + 3, 2 * v : 2 * v + 3].mean())
