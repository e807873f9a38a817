"""The exact cases of docs/math.md §8 (1–10), one test each, named after what it proves."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import fisher, nn
from kfac_ref.backend import to_numpy
from kfac_ref.gradcheck import numerical_jacobian, param_fun, rel_error
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp

KINDS_WITH_RNG = [("exact", None), ("empirical", None), ("mc", 0)]


def _rng(seed):
    return None if seed is None else np.random.default_rng(seed)


# --- 1 ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "empirical"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_one_sample_kfac_blocks_equal_exact_fisher_blocks(kind, activation, device, rng):
    model = tiny_mlp(activation, sizes=(4, 5, 6, 3)).to(device)
    x, y = classification_batch(rng, 1, (4,), 3, device)
    loss = nn.CrossEntropyLoss()
    assert (
        rel_error(fisher.kfac_dense(model, loss, x, y, kind), fisher.block_diagonal(model, loss, x, y, kind)) <= 1e-12
    )


# --- 2 ------------------------------------------------------------------------------
def test_deep_linear_network_kfac_equals_exact_blocks_for_any_batch(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2), seed=1)
    x, y = regression_batch(rng, 9, (3,), 2)
    loss = nn.SquaredErrorLoss()
    assert (
        rel_error(fisher.kfac_dense(model, loss, x, y, "exact"), fisher.block_diagonal(model, loss, x, y, "exact"))
        <= 1e-12
    )
    # ... but not with a nonlinearity in between (the oracle is not vacuous).
    bent = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), seed=1)
    assert (
        rel_error(fisher.kfac_dense(bent, loss, x, y, "exact"), fisher.block_diagonal(bent, loss, x, y, "exact")) > 1e-3
    )


# --- 3 ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "empirical"])
def test_conv_with_one_output_location_and_one_sample_kfc_is_exact(kind, rng):
    # The 4×4 kernel covers the whole 4×4 input with no padding: T = 1.
    model = nn.Sequential(nn.Conv2d(2, 3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(3, 3), seed=0)
    x, y = classification_batch(rng, 1, (2, 4, 4), 3)
    loss = nn.CrossEntropyLoss()
    assert (
        rel_error(fisher.kfac_dense(model, loss, x, y, kind), fisher.block_diagonal(model, loss, x, y, kind)) <= 1e-12
    )


# --- 4 ------------------------------------------------------------------------------
def test_linear_least_squares_fisher_is_identity_kron_a_and_newton_solves_it(rng):
    model = nn.Sequential(nn.Linear(3, 2), seed=0)
    x, y = regression_batch(rng, 20, (3,), 2)
    loss = nn.SquaredErrorLoss()
    f_exact = fisher.dense(model, loss, x, y, "exact")
    ((a, g),) = fisher.kfac_factors(model, loss, x, y, "exact")
    np.testing.assert_allclose(g, np.eye(2), atol=1e-15)  # G = I
    x_bar = np.hstack([x, np.ones((20, 1))])
    np.testing.assert_allclose(a, x_bar.T @ x_bar / 20, rtol=1e-13)  # A = (1/N) X̄ᵀX̄
    assert rel_error(fisher.kfac_dense(model, loss, x, y, "exact"), f_exact) <= 1e-13
    # F is the Hessian of h, so one Newton step lands on the least-squares solution.
    theta = K.get_flat_params(model)
    step = fisher.dense_solve(f_exact, K.batch_grad(model, loss, x, y), damping=1e-13)
    K.set_flat_params(model, theta - step)
    w_ls = np.linalg.lstsq(x_bar, y, rcond=None)[0].T  # (2, 4) = [W | b]
    np.testing.assert_allclose(model[0].weight, w_ls[:, :3], atol=1e-8)
    np.testing.assert_allclose(model[0].bias, w_ls[:, 3], atol=1e-8)


# --- 5 ------------------------------------------------------------------------------
def test_monte_carlo_fisher_approaches_exact_as_samples_grow(rng):
    """Seeded, loose: the MC error shrinks roughly like 1/√M (docs/math.md §8.5)."""
    model = tiny_mlp("tanh", sizes=(3, 4, 3))
    x, y = classification_batch(rng, 2, (3,), 3)
    loss = nn.CrossEntropyLoss()
    exact = fisher.dense(model, loss, x, y, "exact")
    errs = [
        rel_error(fisher.dense(model, loss, x, y, "mc", rng=np.random.default_rng(5), mc_samples=m), exact)
        for m in (10, 100, 10000)
    ]
    assert errs[2] < 0.03
    assert errs[2] < errs[1] < errs[0]


def test_monte_carlo_kfac_at_one_sample_approaches_exact(rng):
    model = tiny_mlp("relu", sizes=(3, 4, 3))
    x, y = classification_batch(rng, 1, (3,), 3)
    loss = nn.CrossEntropyLoss()
    exact = fisher.kfac_dense(model, loss, x, y, "exact")
    mc = fisher.kfac_dense(model, loss, x, y, "mc", rng=np.random.default_rng(3), mc_samples=20000)
    assert rel_error(mc, exact) < 0.03


# --- 7 ------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_name", ["ce", "se", "bce"])
def test_exact_fisher_equals_mean_jt_lambda_j_with_finite_difference_jacobians(loss_name, rng):
    model = tiny_convnet()
    if loss_name == "ce":
        x, y = classification_batch(rng, 3, (2, 6, 6), 3)
        loss = nn.CrossEntropyLoss()
    elif loss_name == "bce":
        x, _ = regression_batch(rng, 3, (2, 6, 6), 3)
        y = rng.random((3, 3))  # Bernoulli means in [0, 1]
        loss = nn.SigmoidCrossEntropyLoss()
    else:
        x, y = regression_batch(rng, 3, (2, 6, 6), 3)
        loss = nn.SquaredErrorLoss()
    f = model(x)
    lam = loss.output_fisher(f)  # (N, C, C), itself checked against an FD Hessian in test_losses
    ref = 0
    for n in range(3):
        jac = numerical_jacobian(param_fun(model, lambda m, n=n: m(x[n : n + 1])[0]), K.get_flat_params(model))
        ref = ref + jac.T @ lam[n] @ jac  # (P, P)
    assert rel_error(fisher.dense(model, loss, x, y, "exact"), ref / 3) <= 1e-7


# --- 8 ------------------------------------------------------------------------------
def test_kronecker_inverse_identity_row_major(rng):
    a = _spd(rng, 4)
    g = _spd(rng, 3)
    v = rng.standard_normal((3, 4))
    # Row-major vec (C order): (G ⊗ A)⁻¹ vec(V) = vec(G⁻¹ V A⁻¹).
    lhs = np.linalg.solve(np.kron(g, a), v.ravel())
    np.testing.assert_allclose(lhs, (np.linalg.inv(g) @ v @ np.linalg.inv(a)).ravel(), rtol=1e-10)
    np.testing.assert_allclose(fisher.kron_solve(a, g, v).ravel(), lhs, rtol=1e-10)


def test_row_major_g_kron_a_is_column_major_a_kron_g(rng):
    """The same operator V ↦ G V A written in both conventions (docs/math.md §1)."""
    a, g, v = _spd(rng, 4), _spd(rng, 3), rng.standard_normal((3, 4))
    np.testing.assert_allclose(np.kron(g, a) @ v.ravel(order="C"), (g @ v @ a).ravel(order="C"), rtol=1e-12)
    np.testing.assert_allclose(np.kron(a, g) @ v.ravel(order="F"), (g @ v @ a).ravel(order="F"), rtol=1e-12)
    # Mixing them up is wrong (unless the factors commute): the test can fail.
    assert rel_error(np.kron(a, g) @ v.ravel(order="C"), (g @ v @ a).ravel(order="C")) > 1e-2


# --- 9 ------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_name", ["ce", "se"])
def test_second_order_kl_is_the_exact_fisher_quadratic_form(loss_name, rng):
    """2 KL(p_θ ‖ p_{θ+εd}) / (ε² dᵀ F d) → 1 as ε → 0 (docs/math.md §8.9)."""
    model = tiny_mlp("tanh", sizes=(3, 5, 3))
    if loss_name == "ce":
        x, y = classification_batch(rng, 4, (3,), 3)
        loss = nn.CrossEntropyLoss()
    else:
        x, y = regression_batch(rng, 4, (3,), 3)
        loss = nn.SquaredErrorLoss()
    theta = K.get_flat_params(model)
    d = rng.standard_normal(theta.shape)
    dfd = d @ fisher.dense(model, loss, x, y, "exact") @ d

    def kl(eps):
        f0 = model(x)
        K.set_flat_params(model, theta + eps * d)
        f1 = model(x)
        K.set_flat_params(model, theta)
        if loss_name == "se":
            return 0.5 * ((f0 - f1) ** 2).sum(1).mean()  # KL(N(f0, I) ‖ N(f1, I))
        p0, p1 = loss.probs(f0), loss.probs(f1)
        return (p0 * (np.log(p0) - np.log(p1))).sum(1).mean()

    errors = [abs(2 * kl(eps) / (eps**2 * dfd) - 1) for eps in (1e-2, 1e-3, 1e-4)]
    assert errors[-1] < 5e-4
    assert errors[2] < errors[1] < errors[0]  # the gap closes as ε → 0


# --- 10 -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind,seed", KINDS_WITH_RNG)
def test_block_diagonal_fisher_is_the_diagonal_blocks_of_the_dense_fisher(kind, seed, device, rng):
    model = tiny_convnet().to(device)
    x, y = classification_batch(rng, 4, (2, 6, 6), 3, device)
    loss = nn.CrossEntropyLoss()
    full = to_numpy(fisher.dense(model, loss, x, y, kind, rng=_rng(seed)))
    bd = to_numpy(fisher.block_diagonal(model, loss, x, y, kind, rng=_rng(seed)))
    slices = K.layer_slices(model)
    for i, si in enumerate(slices):
        for j, sj in enumerate(slices):
            if i == j:
                np.testing.assert_allclose(bd[si, sj], full[si, sj], rtol=1e-13, atol=1e-15)
            else:
                assert not bd[si, sj].any()


def test_kfac_dense_view_is_in_the_same_order_as_the_exact_fisher(rng):
    """Per-layer: G ⊗ A (row-major vec W̄) permuted into θ's order equals a brute-force reorder."""
    model = tiny_mlp("tanh", sizes=(3, 4, 2))
    x, y = classification_batch(rng, 1, (3,), 2)
    loss = nn.CrossEntropyLoss()
    factors = fisher.kfac_factors(model, loss, x, y, "exact")
    dense_view = fisher.kfac_dense(model, loss, x, y, "exact")
    start = 0
    for layer, (a, g) in zip(model.param_layers(), factors):
        d_out, d_in = layer.d_out, layer.d_in
        kron = np.kron(g, a)  # index (o, i) ↦ o·(d_in+1) + i, i = d_in is the bias
        block = np.empty_like(kron)
        for r in range(kron.shape[0]):
            for c in range(kron.shape[1]):
                o, i = divmod(r, d_in + 1)
                o2, i2 = divmod(c, d_in + 1)
                pr = o * d_in + i if i < d_in else d_out * d_in + o  # θ: weight C-order, then bias
                pc = o2 * d_in + i2 if i2 < d_in else d_out * d_in + o2
                block[pr, pc] = kron[r, c]
        sl = slice(start, start + layer.num_params)
        np.testing.assert_allclose(dense_view[sl, sl], block, rtol=1e-14)
        start += layer.num_params


def _spd(rng, d):
    m = rng.standard_normal((d, d))
    return m @ m.T + 0.5 * np.eye(d)


def test_conv_tanh_linear_is_exact_for_kfc_with_one_sample_at_one_location():
    # docs/math.md §8.3 on the notebook-04 model: h = k = 3 leaves T = 1 location
    from kfac_ref import fisher, models, nn
    from kfac_ref.data import make_images

    model = models.conv_tanh_linear(3)
    x, y = make_images(1, 1, 3, 3, 3, rng=0)
    loss_fn = nn.CrossEntropyLoss()
    errors = fisher.layer_errors(
        model, fisher.kfac_dense(model, loss_fn, x, y, "exact"), fisher.block_diagonal(model, loss_fn, x, y, "exact")
    )
    assert max(errors["layers"]) < 1e-10
    assert model.num_params == (9 + 1) * 2 + (2 + 1) * 3


# --- the Bernoulli (sigmoid cross-entropy) output: MC and empirical kinds --------------------
def test_bernoulli_monte_carlo_fisher_approaches_exact(rng):
    """Seeded, loose: sampled 0/1 targets average to the exact Fisher with Λ = diag(p(1 − p))."""
    model = tiny_mlp("tanh", sizes=(3, 4, 3))
    x = rng.standard_normal((2, 3))
    loss = nn.SigmoidCrossEntropyLoss()
    exact = fisher.dense(model, loss, x, None, "exact")
    mc = fisher.dense(model, loss, x, None, "mc", rng=np.random.default_rng(1), mc_samples=20000)
    assert rel_error(mc, exact) < 0.03


def test_bernoulli_empirical_fisher_is_mean_outer_product_of_per_sample_gradients(rng):
    """(1/N) Σ_n ∇ℓ_n ∇ℓ_nᵀ with each ∇ℓ_n the gradient of a one-sample batch (a brute-force loop)."""
    model = tiny_mlp("sigmoid", sizes=(3, 4, 2))
    x, y = rng.standard_normal((3, 3)), rng.random((3, 2))
    loss = nn.SigmoidCrossEntropyLoss()
    grads = [K.batch_grad(model, loss, x[n : n + 1], y[n : n + 1]) for n in range(3)]
    ref = sum(np.outer(g, g) for g in grads) / 3
    assert rel_error(fisher.dense(model, loss, x, y, "empirical"), ref) <= 1e-12
