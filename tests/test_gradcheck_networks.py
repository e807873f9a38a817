"""Whole networks: gradients w.r.t. parameters and inputs, per-sample gradients,
and independent backward passes on one forward pass (docs/math.md §8.6)."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import nn
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.backprop import backward, forward
from kfac_ref.gradcheck import numerical_grad, numerical_param_grad, rel_error
from kfac_ref.grads import input_grad, stats_to_flat
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp

TOL = 1e-6

NETWORKS = [
    ("mlp-relu-ce", lambda: tiny_mlp("relu"), (4,), "ce"),
    ("mlp-tanh-ce", lambda: tiny_mlp("tanh"), (4,), "ce"),
    ("mlp-sigmoid-ce", lambda: tiny_mlp("sigmoid"), (4,), "ce"),
    ("mlp-relu-se", lambda: tiny_mlp("relu"), (4,), "se"),
    ("mlp-tanh-se", lambda: tiny_mlp("tanh", sizes=(4, 6, 5, 3)), (4,), "se"),
    ("mlp-sigmoid-se-nobias", lambda: tiny_mlp("sigmoid", bias=False), (4,), "se"),
    ("convnet-maxpool-ce", lambda: tiny_convnet(pool="max"), (2, 6, 6), "ce"),
    ("convnet-avgpool-ce", lambda: tiny_convnet(pool="avg"), (2, 6, 6), "ce"),
    ("convnet-maxpool-se", lambda: tiny_convnet(pool="max"), (2, 6, 6), "se"),
    ("convnet-stride2-se", lambda: tiny_convnet(pool="avg", stride=2, padding=1, in_shape=(2, 9, 9)), (2, 9, 9), "se"),
]


def _setup(make, in_shape, loss, rng, device, n=4):
    model = make().to(device)
    if loss == "ce":
        x, y = classification_batch(rng, n, in_shape, 3, device)
        return model, nn.CrossEntropyLoss(), x, y
    x, y = regression_batch(rng, n, in_shape, 3, device)
    return model, nn.SquaredErrorLoss(), x, y


@pytest.mark.parametrize("name,make,in_shape,loss", NETWORKS, ids=[c[0] for c in NETWORKS])
def test_param_grad_matches_finite_differences(name, make, in_shape, loss, device, rng):
    model, loss_fn, x, y = _setup(make, in_shape, loss, rng, device)
    analytic = K.batch_grad(model, loss_fn, x, y)
    numeric = numerical_param_grad(model, loss_fn, x, y)
    assert analytic.shape == (model.num_params,)
    assert rel_error(analytic, numeric) <= TOL


@pytest.mark.parametrize("name,make,in_shape,loss", NETWORKS, ids=[c[0] for c in NETWORKS])
def test_input_grad_matches_finite_differences(name, make, in_shape, loss, device, rng):
    model, loss_fn, x, y = _setup(make, in_shape, loss, rng, device)
    analytic = input_grad(model, loss_fn, x, y)
    numeric = numerical_grad(lambda z: float(loss_fn(model(to_device(z, device)), y)), x)
    assert rel_error(analytic, numeric) <= TOL


@pytest.mark.parametrize("name,make,in_shape,loss", NETWORKS, ids=[c[0] for c in NETWORKS])
def test_per_sample_grads_equal_single_sample_passes(name, make, in_shape, loss, device, rng):
    """Row n equals a backward pass on sample n alone (≤ 1e-10); their mean is the batch gradient."""
    model, loss_fn, x, y = _setup(make, in_shape, loss, rng, device, n=5)
    per_sample = to_numpy(K.per_sample_grads(model, loss_fn, x, y))
    assert per_sample.shape == (5, model.num_params)
    for i in range(5):
        single = to_numpy(K.batch_grad(model, loss_fn, x[i : i + 1], y[i : i + 1]))
        assert rel_error(per_sample[i], single) <= 1e-10
    assert rel_error(per_sample.mean(axis=0), K.batch_grad(model, loss_fn, x, y)) <= 1e-12


def test_per_sample_grad_matches_finite_differences(rng):
    """docs/math.md §8.6: a per-sample gradient is the central difference of that sample's loss."""
    model = tiny_convnet()
    loss_fn = nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 3, (2, 6, 6), 3)
    per_sample = K.per_sample_grads(model, loss_fn, x, y)
    numeric = numerical_param_grad(model, loss_fn, x[1:2], y[1:2])
    assert rel_error(per_sample[1], numeric) <= TOL


def test_two_backward_passes_on_one_forward_are_independent(device, rng):
    """Backprop seeds A, then seeds B, on one trace = two separate forward/backward runs."""
    model = tiny_convnet().to(device)
    x, _ = classification_batch(rng, 4, (2, 6, 6), 3, device)
    seeds_a = to_device(rng.standard_normal((4, 3)), device)
    seeds_b = to_device(rng.standard_normal((2, 4, 3)), device)

    trace = forward(model, x)
    stats_a, gx_a = backward(model, trace, seeds_a, input_grad=True)
    stats_b, gx_b = backward(model, trace, seeds_b, input_grad=True)

    ref_a, ref_gx_a = backward(model, forward(model, x), seeds_a, input_grad=True)
    ref_b, ref_gx_b = backward(model, forward(model, x), seeds_b, input_grad=True)
    np.testing.assert_array_equal(to_numpy(stats_to_flat(stats_a)), to_numpy(stats_to_flat(ref_a)))
    np.testing.assert_array_equal(to_numpy(stats_to_flat(stats_b)), to_numpy(stats_to_flat(ref_b)))
    np.testing.assert_array_equal(to_numpy(gx_a), to_numpy(ref_gx_a))
    np.testing.assert_array_equal(to_numpy(gx_b), to_numpy(ref_gx_b))
    # ... and the seed axis is only a batch of independent passes:
    for s in range(2):
        single, _ = backward(model, trace, seeds_b[s])
        np.testing.assert_allclose(
            to_numpy(stats_to_flat(single)[0]), to_numpy(stats_to_flat(stats_b)[s]), rtol=1e-13, atol=1e-15
        )


def test_backward_leaves_trace_and_seeds_untouched(rng):
    model = tiny_convnet(pool="max")
    x, _ = classification_batch(rng, 3, (2, 6, 6), 3)
    trace = forward(model, x)
    before = [
        {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in c.items()} for c in trace.caches
    ]
    seeds = rng.standard_normal((2, 3, 3))
    seeds_copy = seeds.copy()
    backward(model, trace, seeds, input_grad=True)
    np.testing.assert_array_equal(seeds, seeds_copy)
    for c, b in zip(trace.caches, before):
        for k, v in c.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, b[k])


def test_layer_statistics_shapes_and_homogeneous_coordinate(rng):
    """ā is (N, T, d_in + 1) with a last column of ones; g is (S, N, T, d_out)."""
    model = tiny_convnet()
    x, y = classification_batch(rng, 5, (2, 6, 6), 3)
    trace = forward(model, x)
    stats, _ = backward(model, trace, nn.CrossEntropyLoss().grad(trace.output, y))
    conv1, conv2, fc = stats
    assert conv1.a_bar.shape == (5, 36, 2 * 9 + 1) and conv1.g.shape == (1, 5, 36, 3)
    assert conv2.a_bar.shape == (5, 4, 3 * 4 + 1) and conv2.g.shape == (1, 5, 4, 4)
    assert fc.a_bar.shape == (5, 1, 17) and fc.g.shape == (1, 5, 1, 3)
    for st in stats:
        np.testing.assert_array_equal(st.a_bar[..., -1], 1.0)
    # The last layer's g is the per-sample loss gradient, not divided by N.
    np.testing.assert_allclose(fc.g[0, :, 0], nn.CrossEntropyLoss().grad(trace.output, y), rtol=0, atol=0)


def test_flat_params_roundtrip_and_order():
    """θ lists each layer's weight (C order) then bias, layers in network order (docs/math.md §1)."""
    model = tiny_convnet()
    theta = K.get_flat_params(model)
    conv1 = model.param_layers()[0]
    np.testing.assert_array_equal(theta[: conv1.weight.size], conv1.weight.ravel())
    np.testing.assert_array_equal(theta[conv1.weight.size : conv1.num_params], conv1.bias)
    K.set_flat_params(model, theta * 2)
    np.testing.assert_array_equal(K.get_flat_params(model), theta * 2)
    with pytest.raises(ValueError, match=rf"expected \({model.num_params},\)"):
        K.set_flat_params(model, theta[:-1])


def test_seeded_initialisation_is_reproducible():
    a, b, c = tiny_mlp(seed=3), tiny_mlp(seed=3), tiny_mlp(seed=4)
    np.testing.assert_array_equal(K.get_flat_params(a), K.get_flat_params(b))
    assert not np.allclose(K.get_flat_params(a), K.get_flat_params(c))
    # Two layers of one shape in one network still differ.
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), seed=0)
    assert not np.allclose(m[0].weight, m[1].weight)
    # PyTorch's default range U(−1/√fan_in, 1/√fan_in).
    big = nn.Linear(400, 50, rng=0)
    assert np.abs(big.weight).max() <= 1 / 20 and np.abs(big.weight).max() > 0.9 / 20
