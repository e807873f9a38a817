"""Losses as likelihoods (docs/math.md §2): values, gradients, Λ, S, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import nn
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.gradcheck import numerical_grad, numerical_jacobian, rel_error

LOSSES = {
    "ce": (nn.CrossEntropyLoss(), lambda rng, n, c: rng.integers(0, c, size=n)),
    "se": (nn.SquaredErrorLoss(), lambda rng, n, c: rng.standard_normal((n, c))),
    "bce": (nn.SigmoidCrossEntropyLoss(), lambda rng, n, c: rng.random((n, c))),
}


def test_cross_entropy_value_is_negative_log_softmax(rng):
    f = rng.standard_normal((4, 5)) * 3
    y = np.array([0, 4, 2, 2])
    p = np.exp(f) / np.exp(f).sum(1, keepdims=True)
    np.testing.assert_allclose(nn.CrossEntropyLoss().per_sample(f, y), -np.log(p[np.arange(4), y]), rtol=1e-13)
    # Averaged over the batch (the 1/N of h).
    assert np.isclose(nn.CrossEntropyLoss()(f, y), -np.log(p[np.arange(4), y]).mean(), rtol=1e-13)


def test_cross_entropy_is_stable_for_huge_logits():
    f = np.array([[1000.0, 0.0, -1000.0]])
    assert np.isclose(nn.CrossEntropyLoss().per_sample(f, np.array([1]))[0], 1000.0)
    assert np.isfinite(nn.CrossEntropyLoss().grad(f, np.array([2]))).all()


def test_squared_error_has_the_half():
    f, y = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(nn.SquaredErrorLoss().per_sample(f, y), [2.5, 12.5])
    assert nn.SquaredErrorLoss()(f, y) == 7.5


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_output_gradient_is_per_sample_and_matches_finite_differences(kind, device, rng):
    loss, make_y = LOSSES[kind]
    f, y = rng.standard_normal((3, 4)), make_y(rng, 3, 4)
    fd, yd = to_device(f, device), to_device(y, device)
    # Gradient of the *sum* of per-sample losses: ∂ℓ_n/∂f_n, not divided by N.
    numeric = numerical_grad(lambda z: float(to_numpy(loss.per_sample(to_device(z, device), yd)).sum()), f)
    assert rel_error(loss.grad(fd, yd), numeric) <= 1e-8


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_output_fisher_is_the_hessian_in_the_logits(kind, rng):
    """docs/math.md §8.7: Λ(f) equals the finite-difference Hessian of ℓ in f."""
    loss, make_y = LOSSES[kind]
    f, y = rng.standard_normal((1, 4)), make_y(rng, 1, 4)
    hess = numerical_jacobian(lambda z: loss.grad(z, y)[0], f, eps=1e-5)  # (4, 4)
    assert rel_error(loss.output_fisher(f)[0], hess) <= 1e-8


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_output_fisher_product_is_lambda_times_u_without_forming_lambda(kind, device, rng):
    """Λ_n u_n for stacked u (k, N, C) equals the dense Λ (N, C, C) applied sample by sample."""
    loss, _ = LOSSES[kind]
    f, u = rng.standard_normal((5, 4)), rng.standard_normal((3, 5, 4))
    lam = to_numpy(loss.output_fisher(to_device(f, device)))
    want = np.stack([[lam[n] @ u[i, n] for n in range(5)] for i in range(3)])
    got = loss.output_fisher_product(to_device(f, device), to_device(u, device))
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-13, atol=1e-15)
    assert got.dtype == u.dtype and got.shape == u.shape


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_sqrt_output_fisher_squares_to_lambda(kind, device, rng):
    loss, _ = LOSSES[kind]
    f = to_device(rng.standard_normal((6, 5)), device)
    s = to_numpy(loss.sqrt_output_fisher(f))
    np.testing.assert_allclose(s @ s.transpose(0, 2, 1), to_numpy(loss.output_fisher(f)), atol=1e-14)


def test_cross_entropy_output_fisher_is_expected_outer_gradient(rng):
    """Λ = E_{y~p}[∇ℓ ∇ℓᵀ] = Σ_c p_c (p − e_c)(p − e_c)ᵀ, summed by brute force."""
    loss = nn.CrossEntropyLoss()
    f = rng.standard_normal((2, 3))
    p = loss.probs(f)
    for n in range(2):
        ref = sum(
            p[n, c] * np.outer(loss.grad(f[n : n + 1], np.array([c]))[0], loss.grad(f[n : n + 1], np.array([c]))[0])
            for c in range(3)
        )
        np.testing.assert_allclose(loss.output_fisher(f)[n], ref, atol=1e-15)


def test_sampling_is_reproducible_and_follows_the_predictive(device):
    """Seeded draws repeat exactly; frequencies match softmax(f) (loose, Monte-Carlo)."""
    loss = nn.CrossEntropyLoss()
    f = to_device(np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), device)
    a = loss.sample(f, np.random.default_rng(7), 20000)
    b = loss.sample(f, np.random.default_rng(7), 20000)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert a.shape == (20000, 2)
    freq = np.stack([np.bincount(to_numpy(a)[:, n], minlength=3) / 20000 for n in range(2)])
    np.testing.assert_allclose(freq, to_numpy(loss.probs(f)), atol=0.015)


def test_gaussian_sampling_has_unit_variance_around_the_output():
    f = np.array([[1.0, -2.0]])
    draws = nn.SquaredErrorLoss().sample(f, np.random.default_rng(0), 20000)  # (M, N, C)
    assert draws.shape == (20000, 1, 2)
    np.testing.assert_allclose(draws.mean(axis=0), f, atol=0.03)
    np.testing.assert_allclose(draws.var(axis=0), [[1.0, 1.0]], atol=0.04)


def test_bad_targets_give_clear_errors():
    ce, se = nn.CrossEntropyLoss(), nn.SquaredErrorLoss()
    f = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*\[0, 4\]"):
        ce(f, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ce(f, np.array([0, 1, -1]))
    with pytest.raises(TypeError, match="integer"):
        ce(f, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        ce(f, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"expected \(3, 4\)"):
        se(f, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        se(f, np.full((3, 4), np.nan))
    with pytest.raises(TypeError, match="Generator"):
        ce.sample(f, 0)
    with pytest.raises(ValueError, match="positive integer"):
        ce.sample(f, np.random.default_rng(0), 0)


def test_sigmoid_cross_entropy_is_the_bernoulli_negative_log_likelihood(rng):
    """ℓ = −Σ_c [y log p + (1 − y) log(1 − p)], p = 1 / (1 + e^{−f}), written out by hand."""
    f, y = rng.standard_normal((4, 3)) * 3, rng.random((4, 3))
    p = 1 / (1 + np.exp(-f))
    ref = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=1)
    np.testing.assert_allclose(nn.SigmoidCrossEntropyLoss().per_sample(f, y), ref, rtol=1e-12)
    assert np.isclose(nn.SigmoidCrossEntropyLoss()(f, y), ref.mean(), rtol=1e-12)  # the 1/N of h


def test_sigmoid_cross_entropy_is_stable_for_huge_logits():
    f, y = np.array([[800.0, -800.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(nn.SigmoidCrossEntropyLoss().per_sample(f, y), [1600.0])
    np.testing.assert_allclose(nn.SigmoidCrossEntropyLoss().grad(f, y), [[1.0, -1.0]])


def test_sigmoid_output_fisher_is_expected_outer_gradient_over_all_outcomes(rng):
    """Λ = E_{y~Bernoulli(p)}[∇ℓ ∇ℓᵀ], summed over all 2^C binary targets by brute force."""
    loss = nn.SigmoidCrossEntropyLoss()
    f = rng.standard_normal((2, 3))
    p = loss.probs(f)
    for n in range(2):
        ref = np.zeros((3, 3))
        for bits in range(8):
            yb = np.array([[(bits >> c) & 1 for c in range(3)]], dtype=float)
            prob = np.prod(np.where(yb[0] == 1, p[n], 1 - p[n]))
            d = loss.grad(f[n : n + 1], yb)[0]
            ref += prob * np.outer(d, d)
        np.testing.assert_allclose(loss.output_fisher(f)[n], ref, atol=1e-15)


def test_bernoulli_sampling_is_reproducible_and_follows_the_means():
    loss = nn.SigmoidCrossEntropyLoss()
    f = np.array([[2.0, 0.0, -1.0]])
    a = loss.sample(f, np.random.default_rng(3), 20000)
    np.testing.assert_array_equal(a, loss.sample(f, np.random.default_rng(3), 20000))
    assert a.shape == (20000, 1, 3) and set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_allclose(a.mean(axis=0), loss.probs(f), atol=0.015)


def test_sigmoid_cross_entropy_refuses_targets_outside_zero_one():
    loss, f = nn.SigmoidCrossEntropyLoss(), np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"targets contain 2 value\(s\) outside \[0, 1\]"):
        loss(f, np.array([[0.0, 1.5, 0.2], [-0.1, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        loss(f, np.zeros((2, 2)))
    with pytest.raises(TypeError, match="floating point"):
        loss(f, np.zeros((2, 3), dtype=int))
