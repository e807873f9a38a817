"""EKFAC [GLBV18] (docs/math.md §12): exact oracles first, then a brute force from per-sample gradients."""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import fisher, nn
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.fisher.ekfac import EKFACInverse, eigenbasis, ekfac_layers
from kfac_ref.fisher.kfac import factors_from_stats
from kfac_ref.gradcheck import rel_error
from kfac_ref.params import layer_slices, wbar_order
from tests.brute_force import fisher_from_grads, weighted_label_grads
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp

KINDS = ["exact", "empirical", "mc"]


def _rng(kind):
    return np.random.default_rng(11) if kind == "mc" else None


def _problem(net, n, rng, loss_name="ce", seed=0, device="cpu"):
    if net == "conv":
        model, in_shape, c = tiny_convnet(seed=seed), (2, 6, 6), 3
    elif net == "conv1":  # one output location: the 4×4 kernel covers the 4×4 input (docs/math.md §8.3)
        model = nn.Sequential(nn.Conv2d(2, 3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(3, 3), seed=seed)
        in_shape, c = (2, 4, 4), 3
    else:
        model, in_shape, c = tiny_mlp(net, sizes=(4, 5, 6, 3), seed=seed), (4,), 3
    model.to(device)
    if loss_name == "ce":
        x, y = classification_batch(rng, n, in_shape, c, device)
        return model, nn.CrossEntropyLoss(), x, y
    x, y = regression_batch(rng, n, in_shape, c, device)
    return model, nn.SquaredErrorLoss(), x, y


def _wbar_block(layer, block):
    """A layer block in θ's order → row-major vec(W̄) order."""
    perm = np.asarray(wbar_order(layer))
    return block[np.ix_(perm, perm)]


def _kfac_and_exact_blocks(model, loss, x, y, kind):
    """Per layer (U_A, U_G, K-FAC block, exact block F_l), blocks in vec(W̄) order."""
    factors = fisher.kfac_factors(model, loss, x, y, kind, rng=_rng(kind))
    blocks = fisher.layer_blocks(model, loss, x, y, kind, rng=_rng(kind))
    out = []
    for layer, (a, g), f_l in zip(model.param_layers(), factors, blocks):
        u_a, u_g = eigenbasis(a, g)
        out.append((u_a, u_g, np.kron(g, a), _wbar_block(layer, f_l)))
    return out


# --- the scalings are the diagonal of F_l in K-FAC's eigenbasis ------------------------------------------
@pytest.mark.parametrize("net", ["tanh", "relu", "conv"])
@pytest.mark.parametrize("kind", KINDS)
def test_ekfac_scalings_are_the_diagonal_of_the_exact_block_in_the_kfac_eigenbasis(net, kind, rng):
    """S = diag(Qᵀ F_l Q), Q = U_G ⊗ U_A, with F_l the exact-kind layer block of fisher.dense."""
    model, loss, x, y = _problem(net, 5, rng)
    layers = ekfac_layers(model, loss, x, y, kind, rng=_rng(kind))
    for ek, (u_a, u_g, _, f_l) in zip(layers, _kfac_and_exact_blocks(model, loss, x, y, kind)):
        np.testing.assert_array_equal(ek.u_a, u_a)
        q = np.kron(u_g, u_a)
        brute = np.diag(q.T @ f_l @ q).reshape(ek.s.shape)  # (d_out, a_dim)
        assert rel_error(ek.s, brute) <= 1e-12


def test_ekfac_with_kfac_eigenvalues_as_scalings_is_kfac(rng):
    """Q diag(d_G ⊗ d_A) Qᵀ = G ⊗ A: the basis is oriented as the row-major convention says."""
    model, loss, x, y = _problem("conv", 4, rng)
    factors = fisher.kfac_factors(model, loss, x, y, "exact")
    for ek, (a, g) in zip(ekfac_layers(model, loss, x, y, "exact"), factors):
        d_a, d_g = np.linalg.eigvalsh(a), np.linalg.eigvalsh(g)
        assert rel_error(ek.with_scalings(np.outer(d_g, d_a)).dense(), np.kron(g, a)) <= 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_ekfac_frobenius_error_is_never_above_kfacs(kind, rng):
    """EKFAC's diagonal is the Frobenius-best in K-FAC's basis, so ‖E − F_l‖ ≤ ‖G ⊗ A − F_l‖, layer by layer."""
    gains = []
    for seed in range(3):
        for net, loss_name in [("tanh", "ce"), ("relu", "se"), ("conv", "ce"), ("conv", "se")]:
            model, loss, x, y = _problem(net, 6, rng, loss_name, seed=seed)
            layers = ekfac_layers(model, loss, x, y, kind, rng=_rng(kind))
            for ek, (_, _, kfac, f_l) in zip(layers, _kfac_and_exact_blocks(model, loss, x, y, kind)):
                e_ekfac, e_kfac = np.linalg.norm(ek.dense() - f_l), np.linalg.norm(kfac - f_l)
                assert e_ekfac <= e_kfac + 1e-12 * np.linalg.norm(f_l)
                gains.append(e_kfac - e_ekfac)
    assert max(gains) > 1e-3  # and it is often strictly better (the test is not vacuous)


@pytest.mark.parametrize("net", ["tanh", "relu", "conv1"])
@pytest.mark.parametrize("kind", ["exact", "empirical"])
def test_one_sample_ekfac_is_exact(net, kind, device, rng):
    """N = 1 (and one location for Conv2d): F_l = G ⊗ A is diagonal in Q, so EKFAC = K-FAC = F_l.

    docs/math.md §8.1, §8.3."""
    model, loss, x, y = _problem(net, 1, rng, device=device)
    assert (
        rel_error(
            to_numpy(fisher.ekfac_dense(model, loss, x, y, kind)),
            to_numpy(fisher.block_diagonal(model, loss, x, y, kind)),
        )
        <= 1e-10
    )


def test_ekfac_is_not_exact_with_several_samples(rng):
    model, loss, x, y = _problem("tanh", 6, rng)
    assert (
        rel_error(fisher.ekfac_dense(model, loss, x, y, "exact"), fisher.block_diagonal(model, loss, x, y, "exact"))
        > 1e-3
    )


# --- the damped inverse and the T_scale refit ---------------------------------------------------------
@pytest.mark.parametrize("net", ["tanh", "conv"])
@pytest.mark.parametrize("damping", [1e-3, 0.5])
def test_damped_inverse_equals_dense_solve_with_ekfac_plus_damping(net, damping, device, rng):
    model, loss, x, y = _problem(net, 4, rng, device=device)
    for ek, _layer in zip(ekfac_layers(model, loss, x, y, "exact", damping=damping), model.param_layers()):
        v = to_device(rng.standard_normal(ek.s.shape), device)
        got = ek.apply(v)
        assert type(got) is type(v)
        mat = to_numpy(ek.dense()) + damping * np.eye(v.size)
        ref = np.linalg.solve(mat, to_numpy(v).ravel()).reshape(v.shape)
        assert rel_error(to_numpy(got), ref) <= 1e-10


def test_refit_scalings_keeps_the_bases_and_fits_the_new_batch(rng):
    """T_scale vs T_inv [GLBV18]: S refitted on batch 2 = diag(Qᵀ F_l(batch 2) Q) with Q from batch 1."""
    model, loss, x1, y1 = _problem("conv", 4, rng)
    _, _, x2, y2 = _problem("conv", 5, rng)
    old = ekfac_layers(model, loss, x1, y1, "exact", damping=0.1)
    stats2, _ = fisher.fisher_stats(model, loss, x2, y2, "exact")
    blocks2 = fisher.layer_blocks(model, loss, x2, y2, "exact")
    for ek, st, layer, f_l in zip(old, stats2, model.param_layers(), blocks2):
        new = ek.refit_scalings(st.a_bar, st.g)
        assert new.u_a is ek.u_a and new.u_g is ek.u_g and new.damping == 0.1
        q = np.kron(ek.u_g, ek.u_a)
        brute = np.diag(q.T @ _wbar_block(layer, f_l) @ q).reshape(ek.s.shape)
        assert rel_error(new.s, brute) <= 1e-12
        assert rel_error(new.s, ek.s) > 1e-3


def test_kfac_location_split_does_not_change_ekfac(rng):
    """Ω → c Ω, Γ → Γ / c (another split of |T|, docs/math.md §5) leaves the eigenbasis and hence EKFAC unchanged."""
    model, loss, x, y = _problem("conv", 3, rng)
    stats, _ = fisher.fisher_stats(model, loss, x, y, "exact")
    for (a, g), st in zip(factors_from_stats(stats), stats):
        t = st.a_bar.shape[1]
        e1 = EKFACInverse.from_stats(a, g, st.a_bar, st.g, 0.0).dense()
        e2 = EKFACInverse.from_stats(a / t, g * t, st.a_bar, st.g, 0.0).dense()
        assert rel_error(e2, e1) <= 1e-10


def test_float32_stays_float32(rng):
    model, loss, x, y = _problem("conv", 3, rng)
    model.astype(np.float32)
    x = x.astype(np.float32)
    layers = ekfac_layers(model, loss, x, y, "exact", damping=0.1)
    assert all(ek.s.dtype == np.float32 and ek.apply(ek.s).dtype == np.float32 for ek in layers)
    assert fisher.ekfac_dense(model, loss, x, y, "exact").dtype == np.float32


def test_apply_and_with_scalings_name_the_expected_shape(rng):
    model, loss, x, y = _problem("tanh", 2, rng)
    ek = ekfac_layers(model, loss, x, y, "exact")[0]
    with pytest.raises(ValueError, match=r"expected \(5, 5\)"):
        ek.apply(np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"expected \(5, 5\)"):
        ek.with_scalings(np.zeros(3))


# --- brute force from per-sample label gradients ------------------------------------------------------
@pytest.mark.parametrize("net,loss_name", [("tanh", "ce"), ("tanh", "se"), ("conv", "ce"), ("conv", "se")])
@pytest.mark.parametrize("kind", ["exact", "empirical"])
def test_ekfac_dense_matches_brute_force_from_per_sample_gradients(net, loss_name, kind, rng):
    """F_l from label gradients, Q from K-FAC's factors, Q diag(diag(Qᵀ F_l Q)) Qᵀ placed per layer."""
    model, loss, x, y = _problem(net, 5, rng, loss_name)
    f_full = fisher_from_grads(weighted_label_grads(model, loss, x, y, kind))  # (P, P)
    ref = np.zeros_like(f_full)
    factors = fisher.kfac_factors(model, loss, x, y, kind)
    for layer, sl, (a, g) in zip(model.param_layers(), layer_slices(model), factors):
        perm = np.asarray(wbar_order(layer))
        q = np.kron(np.linalg.eigh(g)[1], np.linalg.eigh(a)[1])
        f_l = f_full[sl, sl][np.ix_(perm, perm)]  # vec(W̄) order
        e_l = q @ np.diag(np.diag(q.T @ f_l @ q)) @ q.T
        block = np.empty_like(e_l)
        block[np.ix_(perm, perm)] = e_l  # back to θ's order
        ref[sl, sl] = block
    assert rel_error(fisher.ekfac_dense(model, loss, x, y, kind), ref) <= 1e-8
