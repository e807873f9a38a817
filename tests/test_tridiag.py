"""Block-tridiagonal K-FAC [MG15 §4.3, App. B] (docs/math.md §11): exact oracles first, then a brute force."""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import fisher, nn
from kfac_ref.backend import get_xp, to_device, to_numpy
from kfac_ref.fisher.kfac import wbar_block_to_param_order
from kfac_ref.fisher.tridiag import TridiagInverse, tridiag_factors, tridiag_to_dense
from kfac_ref.gradcheck import rel_error
from kfac_ref.params import flat_to_wbar, layer_slices, wbar_to_flat
from tests.brute_force import bias_grads, from_wbar_order, layer_inputs, weighted_label_grads
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp


def _rng(kind):
    return np.random.default_rng(7) if kind == "mc" else None


def _problem(loss_name, n, rng, sizes=(3, 4, 5, 3), activation="tanh", device="cpu", bias=True):
    model = tiny_mlp(activation, sizes=sizes, bias=bias).to(device)
    if loss_name == "ce":
        x, y = classification_batch(rng, n, (sizes[0],), sizes[-1], device)
        return model, nn.CrossEntropyLoss(), x, y
    x, y = regression_batch(rng, n, (sizes[0],), sizes[-1], device)
    return model, nn.SquaredErrorLoss(), x, y


def _tridiagonal_blocks_err(model, approx, exact):
    """max relative error over the blocks (l, l) and (l, l+1) of two (P, P) matrices."""
    sl = layer_slices(model)
    return max(
        rel_error(approx[sl[l], sl[m]], exact[sl[l], sl[m]]) for l in range(len(sl)) for m in (l, l + 1) if m < len(sl)
    )


def _apply_flat(model, inv, g):
    """F̂⁻¹ g through the per-layer matrices of TridiagInverse.apply, back in θ's order."""
    layers, sl = model.param_layers(), layer_slices(model)
    out = inv.apply([flat_to_wbar(layer, g[s]) for layer, s in zip(layers, sl)])
    return get_xp(g).concatenate([wbar_to_flat(layer, m) for layer, m in zip(layers, out)])


# --- what F̂ is -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "empirical", "mc"])
def test_tridiag_agrees_with_kron_factored_fisher_on_the_tridiagonal_blocks(kind, rng):
    """F̂_{l,l} = G_l ⊗ A_l (K-FAC's block) and F̂_{l,l+1} = G_{l,l+1} ⊗ A_{l,l+1} (the cross factors)."""
    model, loss, x, y = _problem("ce", 12, rng)
    f_hat = fisher.kfac_tridiag_dense(model, loss, x, y, kind, rng=_rng(kind))
    diag, cross = tridiag_factors(model, loss, x, y, kind, rng=_rng(kind))
    layers, sl = model.param_layers(), layer_slices(model)
    kfac = fisher.kfac_dense(model, loss, x, y, kind, rng=_rng(kind))
    for l in range(len(layers)):
        assert rel_error(f_hat[sl[l], sl[l]], kfac[sl[l], sl[l]]) <= 1e-12
        if l + 1 < len(layers):
            a_lm, g_lm = cross[l]
            f_tilde = wbar_block_to_param_order(layers[l], layers[l + 1], np.kron(g_lm, a_lm))
            assert rel_error(f_hat[sl[l], sl[l + 1]], f_tilde) <= 1e-10
            assert rel_error(f_hat[sl[l + 1], sl[l]], f_tilde.T) <= 1e-10
    np.testing.assert_array_equal(f_hat, f_hat.T)


@pytest.mark.parametrize("sizes", [(3, 4, 5, 3), (2, 3, 3, 4, 2)])
def test_tridiag_inverse_vanishes_outside_the_tridiagonal_blocks(sizes, rng):
    """F̂⁻¹ = Ξᵀ Λ Ξ is block tridiagonal (squared error and many samples: F̂ invertible)."""
    model, loss, x, y = _problem("se", 60, rng, sizes=sizes)
    f_hat = fisher.kfac_tridiag_dense(model, loss, x, y, "exact")
    inv = np.linalg.inv(f_hat)
    sl = layer_slices(model)
    scale = np.abs(inv).max()
    for l in range(len(sl)):
        for m in range(len(sl)):
            if abs(l - m) > 1:
                assert np.abs(inv[sl[l], sl[m]]).max() <= 1e-10 * scale
    assert np.abs(inv[sl[0], sl[1]]).max() > 1e-6 * scale  # the first off-diagonal is really there


def test_tridiag_is_not_block_diagonal_kfac_off_the_diagonal(rng):
    """Not vacuous: the far blocks of F̂ are the chain's extrapolation Ψ_0 Ψ_1 F̃_{2,2}, not zero."""
    model, loss, x, y = _problem("ce", 12, rng)
    f_hat = fisher.kfac_tridiag_dense(model, loss, x, y, "exact")
    sl = layer_slices(model)
    assert np.abs(f_hat[sl[0], sl[2]]).max() > 1e-6 * np.abs(f_hat).max()


# --- exact cases (docs/math.md §8.1–8.2) ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "empirical"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_one_sample_tridiag_blocks_equal_exact_fisher_blocks(kind, activation, device, rng):
    """N = 1: every (l, m) block of F is Σ_s g_l g_mᵀ ⊗ ā_l ā_mᵀ, so F̂'s tridiagonal blocks are exact."""
    model, loss, x, y = _problem("ce", 1, rng, activation=activation, device=device)
    exact = to_numpy(fisher.dense(model, loss, x, y, kind))
    f_hat = to_numpy(fisher.kfac_tridiag_dense(model, loss, x, y, kind))
    assert _tridiagonal_blocks_err(model, f_hat, exact) <= 1e-10


def test_deep_linear_network_tridiag_blocks_equal_exact_fisher_blocks_for_any_batch(rng):
    """Deep linear net, squared error: g does not depend on the sample, so G_{l,m} ⊗ A_{l,m} is exact."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2), seed=1)
    x, y = regression_batch(rng, 9, (3,), 2)
    loss = nn.SquaredErrorLoss()
    exact = fisher.dense(model, loss, x, y, "exact")
    assert _tridiagonal_blocks_err(model, fisher.kfac_tridiag_dense(model, loss, x, y, "exact"), exact) <= 1e-10
    bent = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2), seed=1)
    exact = fisher.dense(bent, loss, x, y, "exact")
    assert _tridiagonal_blocks_err(bent, fisher.kfac_tridiag_dense(bent, loss, x, y, "exact"), exact) > 1e-3


# --- damping and the matrix-free inverse ------------------------------------------------------------
def test_damping_is_factored_tikhonov_on_the_diagonal_factors_only(rng):
    """[MG15] §6.3 for this case: F̂_γ has (G_l + √γ/π I) ⊗ (A_l + π√γ I) on the diagonal, cross blocks undamped."""
    model, loss, x, y = _problem("ce", 12, rng)
    diag, cross = tridiag_factors(model, loss, x, y, "exact")
    gamma = 0.3
    f_damped = tridiag_to_dense(model, diag, cross, gamma)
    layers, sl = model.param_layers(), layer_slices(model)
    for l, (a, g) in enumerate(diag):
        ad, gd = fisher.factored_damping(a, g, gamma)
        assert (
            rel_error(f_damped[sl[l], sl[l]], wbar_block_to_param_order(layers[l], layers[l], np.kron(gd, ad))) <= 1e-12
        )
        if l + 1 < len(diag):
            a_lm, g_lm = cross[l]
            f_tilde = wbar_block_to_param_order(layers[l], layers[l + 1], np.kron(g_lm, a_lm))
            assert rel_error(f_damped[sl[l], sl[l + 1]], f_tilde) <= 1e-10
    np.linalg.cholesky(f_damped)  # positive definite


@pytest.mark.parametrize(
    "loss_name,sizes,bias",
    [("ce", (3, 4, 5, 3), True), ("se", (2, 3, 3, 4, 2), True), ("ce", (4, 6, 3), False), ("se", (3, 2), True)],
)
@pytest.mark.parametrize("kind", ["exact", "empirical", "mc"])
@pytest.mark.parametrize("gamma", [1e-3, 1.0])
def test_matrix_free_damped_inverse_equals_dense_solve_with_damped_tridiag(loss_name, sizes, bias, kind, gamma, rng):
    model, loss, x, y = _problem(loss_name, 8, rng, sizes=sizes, bias=bias)
    diag, cross = tridiag_factors(model, loss, x, y, kind, rng=_rng(kind))
    g = rng.standard_normal(model.num_params)
    ref = np.linalg.solve(tridiag_to_dense(model, diag, cross, gamma), g)
    got = _apply_flat(model, TridiagInverse.from_factors(diag, cross, gamma), g)
    assert rel_error(got, ref) <= 1e-10


def test_undamped_matrix_free_inverse_equals_dense_solve_when_tridiag_is_invertible(rng):
    model, loss, x, y = _problem("se", 60, rng)
    diag, cross = tridiag_factors(model, loss, x, y, "exact")
    g = rng.standard_normal(model.num_params)
    ref = np.linalg.solve(fisher.kfac_tridiag_dense(model, loss, x, y, "exact"), g)
    assert rel_error(_apply_flat(model, TridiagInverse.from_factors(diag, cross, 0.0), g), ref) <= 1e-8


def test_matrix_free_inverse_on_device_keeps_backend_and_matches_dense(device, rng):
    model, loss, x, y = _problem("ce", 8, rng, device=device)
    diag, cross = tridiag_factors(model, loss, x, y, "exact")
    inv = TridiagInverse.from_factors(diag, cross, 0.01)
    g = to_device(rng.standard_normal(model.num_params), device)
    got = _apply_flat(model, inv, g)
    assert type(got) is type(g)
    ref = np.linalg.solve(to_numpy(tridiag_to_dense(model, diag, cross, 0.01)), to_numpy(g))
    assert rel_error(to_numpy(got), ref) <= 1e-10


def test_float32_stays_float32(rng):
    model, loss, x, y = _problem("ce", 8, rng)
    model.astype(np.float32)
    x = x.astype(np.float32)
    diag, cross = tridiag_factors(model, loss, x, y, "exact")
    assert all(a.dtype == np.float32 and g.dtype == np.float32 for a, g in cross)
    assert fisher.kfac_tridiag_dense(model, loss, x, y, "exact").dtype == np.float32
    out = TridiagInverse.from_factors(diag, cross, 0.1).apply([layer.wbar() for layer in model.param_layers()])
    assert all(o.dtype == np.float32 for o in out)


# --- refusals --------------------------------------------------------------------------------------
def test_refuses_conv_layers_naming_the_pair(rng):
    model = tiny_convnet()
    x, y = classification_batch(rng, 2, (2, 6, 6), 3)
    with pytest.raises(TypeError, match=r"parameter layers 0 and 1 are Conv2d\(2→3"):
        fisher.kfac_tridiag_dense(model, nn.CrossEntropyLoss(), x, y, "exact")


def test_refuses_factors_that_do_not_come_from_one_set_of_statistics(rng):
    """Σ_{l|l+1} ≻ 0 needs the joint [[A_l, A_{l,l+1}], [·, A_{l+1}]] to be a covariance: mixing batches breaks it."""
    model, loss, x, y = _problem("ce", 3, rng)
    diag, cross = tridiag_factors(model, loss, x, y, "exact")
    inflated = [(8 * a_lm, 8 * g_lm) for a_lm, g_lm in cross]
    with pytest.raises(ValueError, match=r"Σ_\(l\|l\+1\) of layers 0, 1 is not positive definite"):
        TridiagInverse.from_factors(diag, inflated, 1e-4)
    with pytest.raises(ValueError, match="layers 1, 2"):
        TridiagInverse.from_factors(diag, [cross[0], (cross[1][0][:, :-1], cross[1][1])], 1e-4)


# --- brute force from per-sample label gradients ------------------------------------------------------
@pytest.mark.parametrize("loss_name,kind", [("ce", "exact"), ("se", "exact"), ("ce", "empirical"), ("se", "empirical")])
def test_tridiag_matches_brute_force_from_per_sample_gradients(loss_name, kind, rng):
    """Factors from a plain forward pass and bias gradients; F̂ by dense Kronecker products and pinv."""
    model, loss, x, y = _problem(loss_name, 10, rng)
    n, terms = x.shape[0], weighted_label_grads(model, loss, x, y, kind)
    a_bars = layer_inputs(model, x)  # (N, a_l)
    gs = [(bias_grads(model, u), w) for u, w in terms]  # per term: [(N, d_l)], (N,)
    num = len(a_bars)

    def a_f(l, m):
        return a_bars[l].T @ a_bars[m] / n

    def g_f(l, m):
        return sum((g[l] * w[:, None]).T @ g[m] for g, w in gs) / n

    f_t = {(l, m): np.kron(g_f(l, m), a_f(l, m)) for l in range(num) for m in range(num)}  # F̃, vec(W̄) order
    blocks = {(num - 1, num - 1): f_t[(num - 1, num - 1)]}
    for l in range(num - 2, -1, -1):  # Dθ_l = Ψ_l Dθ_{l+1} + ε: F̂_{l,m} = Ψ_l F̂_{l+1,m}
        psi = f_t[(l, l + 1)] @ np.linalg.pinv(f_t[(l + 1, l + 1)], rcond=1e-10, hermitian=True)
        blocks[(l, l)] = f_t[(l, l)]
        for m in range(l + 1, num):
            blocks[(l, m)] = psi @ blocks[(l + 1, m)]
    ref = np.block([[blocks[(l, m)] if l <= m else blocks[(m, l)].T for m in range(num)] for l in range(num)])
    got = fisher.kfac_tridiag_dense(model, loss, x, y, kind)
    assert rel_error(got, from_wbar_order(model, ref)) <= 1e-8


def test_undamped_inverse_of_singular_factors_asks_for_damping(rng):
    model, loss, x, y = _problem("ce", 3, rng)  # N = 3 < a_dim: A_l is singular
    diag, cross = tridiag_factors(model, loss, x, y, "exact")
    with pytest.raises(ValueError, match=r"need damping γ > 0, got γ = 0.0"):
        TridiagInverse.from_factors(diag, cross, 0.0)
