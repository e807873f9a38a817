"""How far from NGD: the angle to (F + λI)⁻¹∇h and the curvature error, against dense brute force."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import fisher, nn, optim
from kfac_ref.backend import to_numpy
from kfac_ref.experiments.diagnostics import diagnostics
from kfac_ref.fisher.ekfac import ekfac_layers
from kfac_ref.fisher.kfac import wbar_block_to_param_order
from kfac_ref.params import flat_to_wbar, layer_slices, wbar_to_flat
from tests.helpers import classification_batch, tiny_convnet, tiny_mlp


def _angle(u, v):
    u, v = np.asarray(u), np.asarray(v)
    return float(np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))


def _problem(rng, n=12, device="cpu"):
    model, loss = tiny_mlp(sizes=(4, 5, 6, 3)).to(device), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, n, (4,), 3, device)
    return model, loss, x, y


def _exact_natural(model, loss, x, y, lam, grad=None):
    """(F + λI)⁻¹ ∇h with the dense exact Fisher and numpy.linalg.solve."""
    f = fisher.dense(model, loss, x, y, "exact")
    grad = K.loss_and_grad(model, loss, x, y).grad if grad is None else grad
    return np.linalg.solve(f + lam * np.eye(len(grad)), grad), f


@pytest.mark.parametrize("solver", ["dense", "woodbury"])
def test_exact_ngd_with_the_same_damping_is_at_angle_zero_and_has_no_curvature_error(solver, device, rng):
    model, loss, x, y = _problem(rng, device=device)
    opt = optim.NGD(model, loss, lr=0.1, damping=0.2, kind="exact", solver=solver)
    theta = K.get_flat_params(model)
    opt.step(x, y)
    after = K.get_flat_params(model)
    out = diagnostics(opt, x, y, theta=theta)
    assert out["angle_deg"] <= 1e-5  # arccos-free angle: ≈ 1e-7° from rounding
    assert out["curvature_error"] <= 1e-12 and out["damping"] == 0.2
    np.testing.assert_array_equal(to_numpy(K.get_flat_params(model)), to_numpy(after))  # restored


@pytest.mark.parametrize("damping_mode", ["factored", "exact"])
def test_kfac_angle_and_error_match_a_brute_force_dense_computation(damping_mode, rng):
    model, loss, x, y = _problem(rng)
    lam = 0.1
    opt = optim.KFAC(model, loss, lr=0.1, damping=lam, kind="exact", damping_mode=damping_mode)
    theta = K.get_flat_params(model)
    opt.step(x, y)
    out = diagnostics(opt, x, y, theta=theta)

    K.set_flat_params(model, theta)  # brute force at θ, where the curvature was measured
    factors = fisher.kfac_factors(model, loss, x, y, "exact")
    grad = K.loss_and_grad(model, loss, x, y).grad
    natural, f = _exact_natural(model, loss, x, y, lam)
    parts = []
    for layer, sl, (a, g) in zip(model.param_layers(), layer_slices(model), factors):
        if damping_mode == "exact":
            block = np.kron(g, a) + lam * np.eye(a.shape[0] * g.shape[0])
        else:
            a_d, g_d = fisher.factored_damping(a, g, lam)
            block = np.kron(g_d, a_d)
        parts.append(
            wbar_to_flat(
                layer, np.linalg.solve(block, flat_to_wbar(layer, grad[sl]).reshape(-1)).reshape(g.shape[0], a.shape[0])
            )
        )
    kfac_dir = np.concatenate(parts)
    assert abs(out["angle_deg"] - _angle(kfac_dir, natural)) <= 1e-6
    assert out["angle_deg"] > 1  # K-FAC is not NGD here
    err = np.linalg.norm(fisher.factors_to_dense(model, factors) - f) / np.linalg.norm(f)
    assert abs(out["curvature_error"] - err) <= 1e-12


def test_tridiag_and_ekfac_errors_are_those_of_their_dense_views(rng):
    model, loss, x, y = _problem(rng)
    theta = K.get_flat_params(model)
    f = fisher.dense(model, loss, x, y, "exact")
    tri = fisher.kfac_tridiag_dense(model, loss, x, y, "exact")
    ek = fisher.ekfac_dense(model, loss, x, y, "exact")
    for make, c in ((optim.KFACTridiag, tri), (optim.EKFAC, ek)):
        K.set_flat_params(model, theta)
        opt = make(model, loss, lr=0.1, damping=0.1, kind="exact")
        opt.step(x, y)
        out = diagnostics(opt, x, y, theta=theta)
        assert abs(out["curvature_error"] - np.linalg.norm(c - f) / np.linalg.norm(f)) <= 1e-10


def test_ekfac_angle_matches_the_dense_ekfac_solve_on_a_convnet(rng):
    model, loss = tiny_convnet(), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 5, (2, 6, 6), 3)
    theta = K.get_flat_params(model)
    opt = optim.EKFAC(model, loss, lr=0.1, damping=0.1, kind="exact")
    opt.step(x, y)
    out = diagnostics(opt, x, y, theta=theta)
    K.set_flat_params(model, theta)
    dense = fisher.blocks_to_dense(
        model,
        [
            wbar_block_to_param_order(layer, layer, ek.dense())
            for layer, ek in zip(model.param_layers(), ekfac_layers(model, loss, x, y, "exact"))
        ],
    )
    natural, _ = _exact_natural(model, loss, x, y, 0.1)
    grad = K.loss_and_grad(model, loss, x, y).grad
    assert abs(out["angle_deg"] - _angle(np.linalg.solve(dense + 0.1 * np.eye(len(grad)), grad), natural)) <= 1e-6


def test_sgd_has_no_curvature_and_needs_a_damping(rng):
    model, loss, x, y = _problem(rng)
    opt = optim.SGD(model, loss, lr=0.1)
    with pytest.raises(ValueError, match="sgd has no damping of its own: pass damping"):
        diagnostics(opt, x, y)
    out = diagnostics(opt, x, y, damping=0.3)
    natural, _ = _exact_natural(model, loss, x, y, 0.3)
    assert out["curvature_error"] is None
    assert abs(out["angle_deg"] - _angle(K.loss_and_grad(model, loss, x, y).grad, natural)) <= 1e-6


def test_before_any_step_and_too_large_matrices_are_clear(rng):
    model, loss, x, y = _problem(rng)
    with pytest.raises(ValueError, match="kfac: no curvature yet"):
        diagnostics(optim.KFAC(model, loss), x, y)
    opt = optim.KFAC(model, loss, lr=0.1, kind="exact")
    opt.step(x, y)
    out = diagnostics(opt, x, y, max_bytes=64)
    assert out["curvature_error"] is None and out["angle_deg"] >= 0
