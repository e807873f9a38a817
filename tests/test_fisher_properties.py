"""The three Fishers, products, solves, damping and the conventions users trip on."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import fisher, nn
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.fisher.kfac import factor_a, factor_g
from kfac_ref.fisher.kron import EigenInverse, FactoredInverse, factored_damping, pi_factor
from kfac_ref.gradcheck import rel_error
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp

KINDS = [("exact", None), ("empirical", None), ("mc", 11)]
MODELS = [("mlp", lambda: tiny_mlp("tanh", sizes=(4, 6, 3)), (4,)), ("convnet", lambda: tiny_convnet(), (2, 6, 6))]


def _rng(seed):
    return None if seed is None else np.random.default_rng(seed)


def _case(name, rng, device="cpu", n=5):
    make, in_shape = {m[0]: (m[1], m[2]) for m in MODELS}[name]
    model = make().to(device)
    x, y = classification_batch(rng, n, in_shape, 3, device)
    return model, nn.CrossEntropyLoss(), x, y


@pytest.mark.parametrize("kind,seed", KINDS)
@pytest.mark.parametrize("model_name", [m[0] for m in MODELS])
def test_every_fisher_is_symmetric_positive_semidefinite(kind, seed, model_name, rng):
    model, loss, x, y = _case(model_name, rng)
    f = fisher.dense(model, loss, x, y, kind, rng=_rng(seed))
    np.testing.assert_array_equal(f, f.T)
    assert np.linalg.eigvalsh(f).min() >= -1e-12 * np.abs(f).max()


def test_empirical_fisher_is_the_mean_outer_product_of_per_sample_gradients(rng):
    model, loss, x, y = _case("convnet", rng)
    per_sample = K.per_sample_grads(model, loss, x, y)  # (N, P)
    ref = sum(np.outer(u, u) for u in per_sample) / len(per_sample)
    assert rel_error(fisher.dense(model, loss, x, y, "empirical"), ref) <= 1e-13


def test_exact_fisher_is_the_label_expectation_of_outer_gradients(rng):
    """F = (1/N) Σ_n Σ_c p_{n,c} ∇ℓ(x_n, c) ∇ℓ(x_n, c)ᵀ by brute force over labels."""
    model, loss, x, y = _case("mlp", rng, n=3)
    p = loss.probs(model(x))
    ref = 0
    for n in range(3):
        for c in range(3):
            u = K.batch_grad(model, loss, x[n : n + 1], np.array([c]))
            ref = ref + p[n, c] * np.outer(u, u)
    assert rel_error(fisher.dense(model, loss, x, y, "exact"), ref / 3) <= 1e-13


def test_mc_fisher_with_one_sample_uses_the_sampled_labels(rng):
    """With M = 1 the MC Fisher is the empirical Fisher of the sampled labels."""
    model, loss, x, y = _case("mlp", rng)
    y_hat = loss.sample(model(x), np.random.default_rng(9), 1)[0]
    mc = fisher.dense(model, loss, x, y, "mc", rng=np.random.default_rng(9))
    assert rel_error(mc, fisher.dense(model, loss, x, y_hat, "empirical")) <= 1e-14


@pytest.mark.parametrize("kind,seed", KINDS)
@pytest.mark.parametrize("model_name", [m[0] for m in MODELS])
def test_fvp_and_quadratic_form_agree_with_the_dense_matrix(kind, seed, model_name, device, rng):
    model, loss, x, y = _case(model_name, rng, device)
    f = to_numpy(fisher.dense(model, loss, x, y, kind, rng=_rng(seed)))
    v, w = rng.standard_normal(f.shape[0]), rng.standard_normal(f.shape[0])
    vd, wd = to_device(v, device), to_device(w, device)
    assert rel_error(fisher.fvp(model, loss, x, y, vd, kind, rng=_rng(seed)), f @ v) <= 1e-12
    q = fisher.quadratic_form(model, loss, x, y, vd, wd, kind, rng=_rng(seed))
    assert abs(float(q) - v @ f @ w) <= 1e-12 * abs(v @ f @ w)


@pytest.mark.parametrize("kind,seed", KINDS)
@pytest.mark.parametrize("model_name", [m[0] for m in MODELS])
@pytest.mark.parametrize("damping", [1e-3, 1.0])
def test_dense_and_woodbury_solves_agree(kind, seed, model_name, damping, device, rng):
    model, loss, x, y = _case(model_name, rng, device)
    g = K.batch_grad(model, loss, x, y)
    dense = fisher.dense_solve(fisher.dense(model, loss, x, y, kind, rng=_rng(seed)), g, damping)
    wood = fisher.woodbury_solve(model, loss, x, y, g, damping, kind, rng=_rng(seed))
    assert rel_error(wood, dense) <= 1e-9
    v = fisher.fisher_vectors(model, loss, x, y, kind, rng=_rng(seed))
    assert rel_error(fisher.woodbury_solve_vectors(v, g, damping, x.shape[0]), dense) <= 1e-9


def test_dense_solve_solves_the_damped_system(rng):
    model, loss, x, y = _case("mlp", rng)
    f = fisher.dense(model, loss, x, y, "exact")
    g = K.batch_grad(model, loss, x, y)
    d = fisher.dense_solve(f, g, 0.1)
    np.testing.assert_allclose((f + 0.1 * np.eye(len(g))) @ d, g, rtol=1e-10, atol=1e-14)


# --- damping of Kronecker blocks (docs/math.md §6) ---------------------------------------
def _factors(rng, da=5, dg=3):
    a = rng.standard_normal((da, 2 * da))
    g = rng.standard_normal((dg, 2 * dg))
    return a @ a.T / da, 10 * g @ g.T / dg  # different scales, so π ≠ 1


@pytest.mark.parametrize("gamma", [1e-3, 0.5])
def test_pi_damped_kronecker_inverse_inverts_the_matrix_it_claims(gamma, rng):
    a, g = _factors(rng)
    ad, gd = factored_damping(a, g, gamma)
    pi = np.sqrt((np.trace(a) / 5) / (np.trace(g) / 3))
    assert np.isclose(pi_factor(a, g), pi)
    np.testing.assert_allclose(ad, a + pi * np.sqrt(gamma) * np.eye(5))
    np.testing.assert_allclose(gd, g + np.sqrt(gamma) / pi * np.eye(3))
    v = rng.standard_normal((3, 5))
    got = FactoredInverse.from_factors(a, g, gamma).apply(v)
    ref = np.linalg.solve(np.kron(gd, ad), v.ravel()).reshape(3, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_factored_damping_differs_from_exact_damping_by_the_cross_terms(rng):
    a, g = _factors(rng)
    gamma = 0.3
    ad, gd = factored_damping(a, g, gamma)
    pi, r = pi_factor(a, g), np.sqrt(gamma)
    cross = (r / pi) * np.kron(np.eye(3), a) + pi * r * np.kron(g, np.eye(5))  # row-major order
    np.testing.assert_allclose(np.kron(gd, ad), np.kron(g, a) + gamma * np.eye(15) + cross, rtol=1e-12)
    assert np.linalg.norm(cross) > 0.1 * gamma


@pytest.mark.parametrize("gamma", [1e-6, 0.5])
def test_exactly_damped_kronecker_inverse_inverts_g_kron_a_plus_gamma(gamma, rng):
    a, g = _factors(rng)
    v = rng.standard_normal((3, 5))
    got = EigenInverse.from_factors(a, g, gamma).apply(v)
    ref = np.linalg.solve(np.kron(g, a) + gamma * np.eye(15), v.ravel()).reshape(3, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-8)


# --- conventions users trip on --------------------------------------------------------
def test_fisher_is_a_mean_over_samples_not_a_sum(rng):
    """Duplicating the batch leaves every Fisher (and the gradient) unchanged."""
    model, loss, x, y = _case("convnet", rng, n=3)
    x2, y2 = np.concatenate([x, x]), np.concatenate([y, y])
    for kind in ("exact", "empirical"):
        assert rel_error(fisher.dense(model, loss, x2, y2, kind), fisher.dense(model, loss, x, y, kind)) <= 1e-13
        f1, f2 = fisher.kfac_factors(model, loss, x, y, kind), fisher.kfac_factors(model, loss, x2, y2, kind)
        for (a1, g1), (a2, g2) in zip(f1, f2):
            assert rel_error(a1, a2) <= 1e-13 and rel_error(g1, g2) <= 1e-13
    assert rel_error(K.batch_grad(model, loss, x2, y2), K.batch_grad(model, loss, x, y)) <= 1e-13


def test_per_sample_quantities_are_not_divided_by_n(rng):
    """The averaged loss's gradient carries 1/N; the per-sample g in the statistics does not."""
    model, loss, x, y = _case("mlp", rng, n=4)
    res = K.loss_and_grad(model, loss, x, y)
    last = res.stats[-1]
    np.testing.assert_allclose(last.g[0, :, 0], loss.grad(res.trace.output, y), rtol=0, atol=0)
    # … and the empirical Fisher built from them is not N² too small:
    ps = K.per_sample_grads(model, loss, x, y)
    assert rel_error(fisher.dense(model, loss, x, y, "empirical"), ps.T @ ps / 4) <= 1e-13


def test_squared_error_fisher_has_unit_output_fisher_because_of_the_half(rng):
    """ℓ = ½‖f − y‖² ⇒ Λ = I and, for a linear model, F = I ⊗ (1/N) X̄ᵀ X̄ = the Hessian of h."""
    model = nn.Sequential(nn.Linear(3, 2), seed=0)
    x, y = regression_batch(rng, 6, (3,), 2)
    loss = nn.SquaredErrorLoss()
    f = fisher.dense(model, loss, x, y, "exact")
    x_bar = np.hstack([x, np.ones((6, 1))])
    hess_wbar = np.kron(np.eye(2), x_bar.T @ x_bar / 6)  # row-major vec(W̄) order
    perm = K.params.wbar_order(model[0])
    np.testing.assert_allclose(f[np.ix_(perm, perm)], hess_wbar, rtol=1e-13, atol=1e-15)


def test_conv_location_scaling_omega_sums_and_gamma_averages_over_locations(rng):
    """Ω = (1/N) Σ_n Σ_t ā āᵀ and Γ = (1/(N T)) Σ_{s,n,t} g gᵀ, by brute-force loops."""
    model = tiny_convnet()
    x, y = classification_batch(rng, 3, (2, 6, 6), 3)
    loss = nn.CrossEntropyLoss()
    stats, _ = fisher.fisher_stats(model, loss, x, y, "exact")
    st = stats[0]  # conv1, T = 36
    s_, n, t, _ = st.g.shape
    omega = sum(np.outer(st.a_bar[i, j], st.a_bar[i, j]) for i in range(n) for j in range(t)) / n
    gamma = sum(np.outer(st.g[k, i, j], st.g[k, i, j]) for k in range(s_) for i in range(n) for j in range(t)) / (n * t)
    (a, g), *_ = fisher.kfac_factors(model, loss, x, y, "exact")
    np.testing.assert_allclose(a, omega, rtol=1e-13)
    np.testing.assert_allclose(g, gamma, rtol=1e-13)


def test_kfc_scaling_is_exact_when_locations_are_independent(rng):
    """A 1×1 conv read out at every location with squared error: each location is an
    independent regression, the exact block is I ⊗ Ω, and Γ ⊗ Ω reproduces it —
    with Ω a sum and Γ a mean over locations (both sums or both means would be off by T)."""
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), seed=0)
    x = rng.standard_normal((4, 3, 3, 3))
    y = rng.standard_normal((4, 2 * 9))
    loss = nn.SquaredErrorLoss()
    ((a, g),) = fisher.kfac_factors(model, loss, x, y, "exact")
    np.testing.assert_allclose(g, np.eye(2), atol=1e-14)
    assert rel_error(fisher.kfac_dense(model, loss, x, y, "exact"), fisher.dense(model, loss, x, y, "exact")) <= 1e-13


# --- metrics --------------------------------------------------------------------------
def test_relative_errors_and_angles(rng):
    model, loss, x, y = _case("mlp", rng)
    f = fisher.dense(model, loss, x, y, "exact")
    bd = fisher.block_diagonal(model, loss, x, y, "exact")
    errs = fisher.layer_errors(model, bd, f)
    assert max(errs["layers"]) <= 1e-14  # the blocks are the blocks
    off = f - bd
    assert np.isclose(errs["overall"], np.linalg.norm(off) / np.linalg.norm(f))
    assert np.isclose(fisher.angle_degrees([1.0, 0.0], [1.0, 1.0]), 45.0)
    assert fisher.angle_degrees([1.0, 2.0], [2.0, 4.0]) < 1e-6
    # kfac_angle against the same angle from the dense matrices, solved independently.
    g = K.batch_grad(model, loss, x, y)
    kd = fisher.kfac_dense(model, loss, x, y, "exact")
    exact_dir = np.linalg.solve(f + 1e-2 * np.eye(len(g)), g)
    kfac_dir = np.linalg.solve(kd + 1e-2 * np.eye(len(g)), g)
    cos = exact_dir @ kfac_dir / (np.linalg.norm(exact_dir) * np.linalg.norm(kfac_dir))
    assert np.isclose(fisher.kfac_angle(model, loss, x, y, 1e-2, "exact"), np.degrees(np.arccos(cos)), atol=1e-6)


# --- bad input ------------------------------------------------------------------------
def test_bad_fisher_arguments_give_clear_errors(rng):
    model, loss, x, y = _case("mlp", rng)
    with pytest.raises(ValueError, match="unknown Fisher kind 'true'"):
        fisher.dense(model, loss, x, y, "true")
    with pytest.raises(ValueError, match="mc_samples must be an integer ≥ 1, got 0"):
        fisher.kfac_factors(model, loss, x, y, "mc", rng=np.random.default_rng(0), mc_samples=0)
    with pytest.raises(TypeError, match="needs an explicit rng"):
        fisher.dense(model, loss, x, y, "mc")
    with pytest.raises(MemoryError, match=r"P = 51 parameters needs 20\.3 KiB.*K-FAC.*Woodbury"):
        fisher.dense(model, loss, x, y, "exact", max_bytes=1000)
    with pytest.raises(ValueError, match=r"damping \(λ\) must be ≥ 0"):
        fisher.dense_solve(np.eye(2), np.ones(2), -1.0)
    with pytest.raises(ValueError, match=r"expected \(51,\)"):
        fisher.fvp(model, loss, x, y, np.ones(3), "exact")


def test_kfac_refuses_a_layer_type_it_does_not_support(rng):
    class Scale(nn.ParamLayer):
        kind = "scale"

        def __init__(self, d):
            self.d_in = self.d_out = d
            self.weight, self.bias = np.ones((d, d)), None

        def forward_cached(self, x):
            return x @ self.weight.T, {"a_bar": x[:, None, :]}

        def backward(self, cache, grad_out):
            return grad_out @ self.weight

        def g_from_grad(self, grad_out):
            return grad_out[:, :, None, :]

    model = nn.Sequential(Scale(3), nn.Linear(3, 2), seed=None)
    x, y = classification_batch(rng, 2, (3,), 2)
    with pytest.raises(TypeError, match="K-FAC does not support .*'scale'"):
        fisher.kfac_factors(model, nn.CrossEntropyLoss(), x, y, "exact")


def test_factor_helpers_match_their_formulas(rng):
    a_bar = rng.standard_normal((4, 3, 5))
    g = rng.standard_normal((2, 4, 3, 6))
    np.testing.assert_allclose(factor_a(a_bar), np.einsum("ntk,ntl->kl", a_bar, a_bar) / 4)
    np.testing.assert_allclose(factor_g(g), np.einsum("sntd,snte->de", g, g) / 12)
