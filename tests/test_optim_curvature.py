"""Every Fisher-preconditioned optimizer against its structure built independently, after one step.

With kind="exact", T_cov = T_inv = 1, kl_clip=None and momentum 0, one step at θ on a batch gives
``opt.curvature``; its dense view must equal the structure built here from per-sample *label*
gradients (tests/brute_force.py: no Fisher seeds, no Kronecker-factor code) — the full F, its
layer blocks, its diagonal, the Kronecker products of the factors, the block-tridiagonal F̂,
EKFAC's Q diag(S) Qᵀ — and the step must be −η (M + γ)⁻¹ ∇h by numpy.linalg.solve.
"""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import checkpoint, nn, optim
from kfac_ref.fisher import curvature
from kfac_ref.params import layer_slices, wbar_order

from . import brute_force
from .helpers import classification_batch, tiny_mlp

LR, LAM = 0.7, 0.05
ONE_STEP = {"lr": LR, "momentum": 0.0, "damping": LAM, "kind": "exact", "kl_clip": None}
KFAC_ONE_STEP = {**ONE_STEP, "T_cov": 1, "T_inv": 1}


def _case(rng, n=9):
    model, loss = tiny_mlp("tanh", (4, 5, 3), seed=0), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, n, (4,), 3)
    return model, loss, x, y


def _brute(model, loss, x, y):
    """F, the per-layer factors [(A, G)] and the cross factors (A_01, G_01), from label gradients.

    Exact cross-entropy: Σ_c p_c (e_c − p)(e_c − p)ᵀ = Λ, so the label-gradient terms weighted by
    p_{n,c} give F and, through the bias gradients g (= ∂ℓ/∂b), G = (1/N) Σ_{n,c} p g gᵀ.
    """
    terms = brute_force.weighted_label_grads(model, loss, x, y, "exact")
    f = brute_force.fisher_from_grads(terms)
    n = x.shape[0]
    a_bar = brute_force.layer_inputs(model, x)  # [(N, a_l)]
    gs = [(brute_force.bias_grads(model, u), w) for u, w in terms]  # per term: [(N, d_l)], (N,)

    def g_cross(i, j):
        return sum((g[i] * w[:, None]).T @ g[j] for g, w in gs) / n

    factors = [(a.T @ a / n, g_cross(l, l)) for l, a in enumerate(a_bar)]
    cross = (a_bar[0].T @ a_bar[1] / n, g_cross(0, 1))
    return f, factors, cross


def _in_theta_order(model, blocks):
    """{(l, m): block in row-major vec(W̄) order} → (P, P) in θ's order."""
    p, slices, layers = model.num_params, layer_slices(model), model.param_layers()
    out = np.zeros((p, p))
    for (l, m), block in blocks.items():
        out[
            np.ix_(
                np.asarray(wbar_order(layers[l])) + slices[l].start, np.asarray(wbar_order(layers[m])) + slices[m].start
            )
        ] = block
    return out


def _kron_blocks(model, factors, cross=None):
    blocks = {(l, l): np.kron(g, a) for l, (a, g) in enumerate(factors)}
    if cross is not None:
        blocks[(0, 1)] = np.kron(cross[1], cross[0])
        blocks[(1, 0)] = blocks[(0, 1)].T
    return _in_theta_order(model, blocks)


def _factored(factors, lam):
    out = []
    for a, g in factors:
        pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
        out.append((a + pi * np.sqrt(lam) * np.eye(len(a)), g + np.sqrt(lam) / pi * np.eye(len(g))))
    return out


def _ekfac(model, f, factors):
    """⊕_l Q diag(S) Qᵀ, Q = U_G ⊗ U_A of the factors, S = diag(Qᵀ F_ll Q) (F_ll in vec(W̄) order)."""
    fw = brute_force.to_wbar_order(model, f)
    blocks, start = {}, 0
    for l, (a, g) in enumerate(factors):
        q = np.kron(np.linalg.eigh(g)[1], np.linalg.eigh(a)[1])
        sl = slice(start, start + q.shape[0])
        start = sl.stop
        s = np.diag(q.T @ fw[sl, sl] @ q)
        blocks[(l, l)] = (q * s) @ q.T
    return _in_theta_order(model, blocks)


def _layer_mask(model):
    mask = np.zeros((model.num_params, model.num_params), dtype=bool)
    for sl in layer_slices(model):
        mask[sl, sl] = True
    return mask


# name: (optimizer, M from (model, F, factors, cross), damped M for the step or None when γ is exact)
CASES = {
    "ngd-dense": (lambda m, l: optim.NGD(m, l, solver="dense", **ONE_STEP), lambda mo, f, fa, cr: f, None),
    "ngd-woodbury": (lambda m, l: optim.NGD(m, l, solver="woodbury", **ONE_STEP), lambda mo, f, fa, cr: f, None),
    "block-ngd": (
        lambda m, l: optim.BlockNGD(m, l, **ONE_STEP),
        lambda mo, f, fa, cr: np.where(_layer_mask(mo), f, 0),
        None,
    ),
    "diag-ngd": (lambda m, l: optim.DiagNGD(m, l, **ONE_STEP), lambda mo, f, fa, cr: np.diag(np.diag(f)), None),
    "kfac-exact": (
        lambda m, l: optim.KFAC(m, l, damping_mode="exact", **KFAC_ONE_STEP),
        lambda mo, f, fa, cr: _kron_blocks(mo, fa),
        None,
    ),
    "kfac-factored": (
        lambda m, l: optim.KFAC(m, l, damping_mode="factored", **KFAC_ONE_STEP),
        lambda mo, f, fa, cr: _kron_blocks(mo, fa),
        lambda mo, f, fa, cr: _kron_blocks(mo, _factored(fa, LAM)),
    ),
    "ekfac": (lambda m, l: optim.EKFAC(m, l, **KFAC_ONE_STEP), lambda mo, f, fa, cr: _ekfac(mo, f, fa), None),
    "kfac-tridiag": (
        lambda m, l: optim.KFACTridiag(m, l, **KFAC_ONE_STEP),
        lambda mo, f, fa, cr: _kron_blocks(mo, fa, cr),
        lambda mo, f, fa, cr: _kron_blocks(mo, _factored(fa, LAM), cr),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_step_curvature_and_step_equal_the_structure_built_from_the_dense_fisher(name, rng):
    make, structure, damped = CASES[name]
    model, loss, x, y = _case(rng)
    theta = K.get_flat_params(model).copy()
    grad = K.loss_and_grad(model, loss, x, y).grad
    f, factors, cross = _brute(model, loss, x, y)
    want = structure(model, f, factors, cross)
    opt = make(model, loss)
    opt.step(x, y)
    got = opt.curvature.to_dense()
    assert got.shape == (model.num_params,) * 2
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    m_damped = want + LAM * np.eye(model.num_params) if damped is None else damped(model, f, factors, cross)
    step = K.get_flat_params(model) - theta
    expected = -LR * np.linalg.solve(m_damped, grad)
    assert np.abs(step - expected).max() <= 1e-10 * np.abs(expected).max()
    # the dense inverse the structure reports is the one the step used
    inv = opt.curvature.inverse_dense(LAM)
    assert np.abs(inv @ m_damped - np.eye(model.num_params)).max() <= 1e-8


def test_diag_ngd_is_one_structure_and_one_registry_entry():
    assert optim.OPTIMIZERS["diag-ngd"] is optim.DiagNGD
    opt = optim.make_optimizer("diag-ngd", tiny_mlp(), nn.CrossEntropyLoss())
    assert opt.hyper() == {
        "lr": 0.5,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "damping": 0.3,
        "kind": "exact",
        "mc_samples": 1,
        "ema_decay": 0.0,
        "kl_clip": 0.1,
    }
    assert type(opt.curvature).__module__ == "kfac_ref.fisher.diagonal"


def test_every_fisher_method_exposes_the_protocol_and_sgd_the_identity(rng):
    model, loss, x, y = _case(rng)
    for name, cls in optim.OPTIMIZERS.items():
        if name == "adam":  # a diagonal rescaling of its own, not a curvature structure (docs/math.md §13)
            continue
        opt = cls(model, loss, lr=1e-9) if name == "sgd" else cls(model, loss, lr=1e-9, kind="exact")
        assert isinstance(opt.curvature, curvature.Curvature), name
        opt.step(x, y)
        c = opt.curvature
        assert c.memory() >= 0 and c.refresh_cost() >= 0
        grads = K.loss_and_grad(model, loss, x, y).layer_grads
        out = c.apply(grads, opt.direction_damping)
        assert [o.shape for o in out] == [g.shape for g in grads]
    np.testing.assert_array_equal(optim.SGD(model, loss).curvature.to_dense(), np.eye(model.num_params))


@pytest.mark.parametrize("name", ["diag-ngd", "ngd", "ekfac"])
def test_state_dict_round_trip_continues_the_same_run(name, rng, tmp_path):
    model, loss, x, y = _case(rng)
    a = optim.make_optimizer(name, model, loss, lr=0.3, kind="exact", ema_decay=0.5)
    for _ in range(2):
        a.step(x, y)
    state = a.state_dict()
    theta = K.get_flat_params(model).copy()
    a.step(x, y)
    after = K.get_flat_params(model).copy()
    model_b = tiny_mlp("tanh", (4, 5, 3), seed=0)
    K.set_flat_params(model_b, theta)
    b = optim.make_optimizer(name, model_b, loss, lr=0.3, kind="exact", ema_decay=0.5)
    b.load_state_dict(state)
    b.step(x, y)
    np.testing.assert_array_equal(K.get_flat_params(model_b), after)


def test_the_moving_average_is_written_once_with_its_warm_up():
    # ε_k = min(1 − 1/k, ε): k = 1 takes the batch, k = 2 weighs ½ / ½ when ε ≥ ½, then ε
    assert curvature.moving_average(None, 3.0, 1, 0.9) == 3.0
    assert curvature.moving_average(1.0, 3.0, 2, 0.9) == 2.0
    assert curvature.moving_average(1.0, 3.0, 5, 0.25) == 0.25 * 1.0 + 0.75 * 3.0
    assert curvature.moving_average([1.0, 2.0], [3.0, 4.0], 10, 0.0) == [3.0, 4.0]


def test_ekfac_allows_no_damping_and_the_others_say_why_they_need_it():
    model, loss = tiny_mlp(), nn.CrossEntropyLoss()
    optim.EKFAC(model, loss, damping=0.0)  # exact damping: λ = 0 is the undamped method
    with pytest.raises(ValueError, match="damping_mode='factored' needs damping") as kfac_err:
        optim.KFAC(model, loss, damping=0.0)
    assert "damping_mode='exact'" in str(kfac_err.value)
    with pytest.raises(ValueError, match=r"block-tridiagonal K-FAC damps its diagonal factors") as tri_err:
        optim.KFACTridiag(model, loss, damping=0.0)
    assert "damping_mode" not in str(tri_err.value)  # no advice that does not apply


def test_checkpoint_knows_the_diagonal_state_shape():
    model = tiny_mlp()
    shapes = checkpoint._expected_shapes(model)
    assert shapes["diagonal"] == [(layer.g_dim, layer.a_dim) for layer in model.param_layers()]
