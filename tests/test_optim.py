"""Optimizers against exact answers and brute force (docs/math.md §6–8)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

import kfac_ref as K
from kfac_ref import fisher, nn, optim
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.gradcheck import rel_error
from kfac_ref.optim.quadratic import lm_ratio, lm_update, rescale_coefficients
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp

NEWTON_CASES = [
    ("ngd-dense", lambda m, l: optim.NGD(m, l, lr=1.0, damping=0.0, kind="exact", kl_clip=None)),
    ("block-ngd", lambda m, l: optim.BlockNGD(m, l, lr=1.0, damping=0.0, kind="exact", kl_clip=None)),
    (
        "kfac-exact-damping",
        lambda m, l: optim.KFAC(
            m, l, lr=1.0, momentum=0.0, damping=0.0, kind="exact", damping_mode="exact", kl_clip=None
        ),
    ),
    ("kfac-factored", lambda m, l: optim.KFAC(m, l, lr=1.0, momentum=0.0, damping=1e-20, kind="exact", kl_clip=None)),
    # the textbook defaults: factors from the whole batch, inverses every step, momentum 0.9
    ("kfac-defaults", lambda m, l: optim.KFAC(m, l, lr=1.0, kind="exact", damping=1e-14, T_inv=1, kl_clip=None)),
]


@pytest.mark.parametrize("name,make", NEWTON_CASES, ids=[c[0] for c in NEWTON_CASES])
def test_linear_least_squares_is_solved_in_one_newton_step(name, make, device, rng):
    """docs/math.md §8.4: F = G ⊗ A with G = I, so each method takes the Newton step."""
    model = nn.Sequential(nn.Linear(4, 3), seed=0).to(device)
    x, y = regression_batch(rng, 30, (4,), 3, device)
    make(model, nn.SquaredErrorLoss()).step(x, y)
    xb = np.hstack([to_numpy(x), np.ones((30, 1))])
    w_ls = np.linalg.lstsq(xb, to_numpy(y), rcond=None)[0].T  # (3, 5) = [W | b]
    wbar = np.hstack([to_numpy(model[0].weight), to_numpy(model[0].bias)[:, None]])
    # λ = 1e-14 in factored damping puts √λ ≈ 1e-7 on each factor: a 1e-7-relative shift of the step
    assert rel_error(wbar, w_ls) <= (1e-6 if name == "kfac-defaults" else 1e-9)


def test_kfac_with_exact_seeds_and_damping_equals_exact_ngd_on_one_sample(rng):
    """Softmax regression, one sample: F = G ⊗ A exactly, so the two steps coincide."""
    x, y = classification_batch(rng, 1, (5,), 4)
    a, b = nn.Sequential(nn.Linear(5, 4), seed=2), nn.Sequential(nn.Linear(5, 4), seed=2)
    loss = nn.CrossEntropyLoss()
    optim.NGD(a, loss, lr=0.7, damping=0.05, kind="exact", kl_clip=None).step(x, y)
    optim.KFAC(b, loss, lr=0.7, momentum=0.0, damping=0.05, kind="exact", damping_mode="exact", kl_clip=None).step(x, y)
    assert rel_error(K.get_flat_params(b), K.get_flat_params(a)) <= 1e-12
    moved = K.get_flat_params(a) - K.get_flat_params(nn.Sequential(nn.Linear(5, 4), seed=2))
    assert np.linalg.norm(moved) > 1e-2  # the step is not trivially zero


def test_woodbury_ngd_takes_the_dense_ngd_step(rng):
    model_a, model_b = tiny_convnet(), tiny_convnet()
    x, y = classification_batch(rng, 6, (2, 6, 6), 3)
    loss = nn.CrossEntropyLoss()
    optim.NGD(model_a, loss, lr=0.5, damping=0.1, solver="dense").step(x, y)
    optim.NGD(model_b, loss, lr=0.5, damping=0.1, solver="woodbury").step(x, y)
    assert rel_error(K.get_flat_params(model_a), K.get_flat_params(model_b)) <= 1e-10


# --- the quadratic model of [MG15] §6–7 ----------------------------------------------
def test_rescale_coefficients_minimise_the_quadratic_model(rng):
    """(α, μ) against a direct numerical minimisation of M(αΔ + μδ₀) with a dense F."""
    model, loss = tiny_mlp("tanh", sizes=(4, 5, 3)), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 6, (4,), 3)
    f = fisher.dense(model, loss, x, y, "exact")
    g = K.batch_grad(model, loss, x, y)
    big_delta, delta0 = rng.standard_normal(len(g)), rng.standard_normal(len(g))
    lam = 0.3

    def m(c):
        d = c[0] * big_delta + c[1] * delta0
        return 0.5 * d @ (f + lam * np.eye(len(g))) @ d + g @ d

    vs = [big_delta, delta0]
    coef, change = rescale_coefficients(
        [[v @ f @ w for w in vs] for v in vs], [[v @ w for w in vs] for v in vs], [g @ v for v in vs], lam
    )
    ref = minimize(m, np.zeros(2), method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose(coef, ref, rtol=1e-6)
    assert np.isclose(change, m(coef), rtol=1e-12)
    # With δ₀ = 0: α = −∇hᵀΔ / Δᵀ(F + λI)Δ (docs/math.md §6).
    (alpha,), _ = rescale_coefficients([[big_delta @ f @ big_delta]], [[big_delta @ big_delta]], [g @ big_delta], lam)
    assert np.isclose(alpha, -(g @ big_delta) / (big_delta @ (f + lam * np.eye(len(g))) @ big_delta))


def test_kfac_rescaled_step_is_stationary_for_the_exact_quadratic_model(rng):
    """After a rescaled step δ = αΔ + μδ₀, ∇M(δ) = (F + λI)δ + ∇h is orthogonal to δ and δ₀."""
    model, loss = tiny_convnet(), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 8, (2, 6, 6), 3)
    opt = optim.KFAC(model, loss, lr=1.0, momentum=0.0, damping=0.1, kind="exact", rescale=True, kl_clip=None)
    opt.step(x, y)
    theta, delta0 = K.get_flat_params(model), opt.prev_delta.copy()
    f = fisher.dense(model, loss, x, y, "exact")
    g = K.batch_grad(model, loss, x, y)
    info = opt.step(x, y)
    delta = K.get_flat_params(model) - theta
    grad_m = (f + 0.1 * np.eye(len(g))) @ delta + g
    scale = np.linalg.norm(grad_m) * np.linalg.norm(delta0)
    assert abs(grad_m @ delta0) <= 1e-9 * scale
    assert abs(grad_m @ delta) <= 1e-9 * np.linalg.norm(grad_m) * np.linalg.norm(delta)
    assert info["mu"] != 0.0


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_levenberg_marquardt_ratio_matches_brute_force(wd, rng):
    """ρ = (h(θ+δ) − h(θ)) / (M(δ) − M(0)) for the regularised h = loss + ½ η_wd ‖θ‖²,
    from two loss evaluations and a dense F."""
    model, loss = tiny_mlp("tanh", sizes=(4, 6, 3)), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 10, (4,), 3)
    lam = 0.5
    opt = optim.KFAC(
        model, loss, lr=0.5, momentum=0.0, damping=lam, kind="exact", adapt_damping=True, T_adapt=1, weight_decay=wd
    )
    theta = K.get_flat_params(model)
    h0 = float(loss(model(x), y)) + 0.5 * wd * theta @ theta
    f = fisher.dense(model, loss, x, y, "exact")
    g = K.batch_grad(model, loss, x, y) + wd * theta
    info = opt.step(x, y)
    theta1 = K.get_flat_params(model)
    delta = theta1 - theta
    h1 = float(loss(model(x), y)) + 0.5 * wd * theta1 @ theta1
    m = 0.5 * delta @ (f + (lam + wd) * np.eye(len(g))) @ delta + g @ delta
    rho = (h1 - h0) / m
    assert np.isclose(info["rho"], rho, rtol=1e-10)
    omega = (19 / 20) ** 1
    expected = lam * omega if rho > 0.75 else lam / omega if rho < 0.25 else lam
    assert np.isclose(opt.damping, expected)


def test_factored_inverses_take_the_adapted_damping_at_their_next_refresh(rng):
    """LM changes λ every step here; the factored inverses are rebuilt with the current λ every T_inv steps."""
    model, loss = tiny_mlp("tanh", sizes=(4, 6, 3)), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 10, (4,), 3)
    opt = optim.KFAC(
        model,
        loss,
        lr=0.5,
        momentum=0.0,
        damping=0.5,
        kind="exact",
        adapt_damping=True,
        T_adapt=1,
        T_inv=2,
        stats_fraction=1.0,
    )
    opt.step(x, y)  # refresh with λ = 0.5, then LM changes λ
    assert opt.curvature.damping == 0.5 and opt.damping != 0.5
    opt.step(x, y)  # no refresh at step 2
    assert opt.curvature.damping == 0.5
    lam = opt.damping
    opt.step(x, y)  # step 3 refreshes with the current λ
    assert opt.curvature.damping == lam
    a, gg = opt.curvature.factors[0]
    ad, gd = fisher.factored_damping(a, gg, lam)
    np.testing.assert_allclose(opt.curvature.inverses[0].a_inv, np.linalg.inv(ad), rtol=1e-8)
    np.testing.assert_allclose(opt.curvature.inverses[0].g_inv, np.linalg.inv(gd), rtol=1e-8)


def test_lm_rule_moves_damping_the_right_way():
    assert lm_update(1.0, 0.9, 0.5) == 0.5
    assert lm_update(1.0, 0.1, 0.5) == 2.0
    assert lm_update(1.0, 0.5, 0.5) == 1.0
    assert lm_ratio(1.0, 0.5, -1.0) == 0.5
    assert lm_ratio(1.0, 0.5, 0.0) == -np.inf


def test_kl_clipping_bounds_the_predicted_kl(rng):
    model, loss = tiny_mlp("tanh", sizes=(4, 6, 3)), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 10, (4,), 3)
    opt = optim.KFAC(model, loss, lr=10.0, momentum=0.0, damping=1e-3, kind="exact", kl_clip=1e-4)
    res = K.loss_and_grad(model, loss, x, y)
    g = res.grad
    info = opt.step(x, y)
    nat = opt.precondition(res.layer_grads)
    # The clipped step satisfies η² ν² F̃⁻¹∇h·∇h = κ exactly when ν < 1.
    assert info["kl_clip_nu"] < 1
    assert np.isclose((10.0 * info["kl_clip_nu"]) ** 2 * (nat @ g), 1e-4, rtol=1e-10)


def test_momentum_conventions_match_pytorch_formulas(rng):
    model, loss = tiny_mlp(), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 5, (4,), 3)
    theta0 = K.get_flat_params(model)
    opt = optim.SGD(model, loss, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    g0 = K.batch_grad(model, loss, x, y) + 0.01 * theta0
    opt.step(x, y)
    theta1 = K.get_flat_params(model)
    np.testing.assert_allclose(theta1, theta0 - 0.1 * (g0 + 0.9 * g0), rtol=1e-13)
    g1 = K.batch_grad(model, loss, x, y) + 0.01 * theta1
    opt.step(x, y)
    v = 0.9 * g0 + g1
    np.testing.assert_allclose(K.get_flat_params(model), theta1 - 0.1 * (g1 + 0.9 * v), rtol=1e-13)


def test_kfac_moving_average_schedule(rng):
    """ε_k = min(1 − 1/k, ε): step 1 takes the batch factors, step 2 averages them equally."""
    model, loss = tiny_mlp(), nn.CrossEntropyLoss()
    x1, y1 = classification_batch(rng, 5, (4,), 3)
    x2, y2 = classification_batch(rng, 5, (4,), 3)
    opt = optim.KFAC(model, loss, lr=1e-12, momentum=0.0, damping=1.0, kind="exact", stats_fraction=1.0)
    opt.step(x1, y1)
    f1 = fisher.kfac_factors(model, loss, x1, y1, "exact")
    for (a, g), (ar, gr) in zip(opt.curvature.factors, f1):
        assert rel_error(a, ar) <= 1e-10 and rel_error(g, gr) <= 1e-10
    f2 = fisher.kfac_factors(model, loss, x2, y2, "exact")
    opt.step(x2, y2)
    for (a, g), (a1, g1), (a2, g2) in zip(opt.curvature.factors, f1, f2):
        assert rel_error(a, 0.5 * a1 + 0.5 * a2) <= 1e-8
        assert rel_error(g, 0.5 * g1 + 0.5 * g2) <= 1e-8


def test_kfac_moving_average_is_capped_at_epsilon(rng):
    """With ε = 0.6, step 3 uses ε_3 = min(1 − 1/3, 0.6) = 0.6, not 2/3."""
    model, loss = tiny_mlp(), nn.CrossEntropyLoss()
    batches = [classification_batch(rng, 5, (4,), 3) for _ in range(3)]
    opt = optim.KFAC(model, loss, lr=1e-12, momentum=0.0, damping=1.0, kind="exact", stats_fraction=1.0, ema_decay=0.6)
    per_batch = []
    for x, y in batches:
        per_batch.append(fisher.kfac_factors(model, loss, x, y, "exact"))
        opt.step(x, y)
    for layer, (a, _g) in enumerate(opt.curvature.factors):
        a12 = 0.5 * per_batch[0][layer][0] + 0.5 * per_batch[1][layer][0]
        assert rel_error(a, 0.6 * a12 + 0.4 * per_batch[2][layer][0]) <= 1e-8


def test_step_reports_loss_norm_and_phase_times(rng):
    model, loss = tiny_convnet(), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 6, (2, 6, 6), 3)
    h0 = float(loss(model(x), y))
    theta = K.get_flat_params(model)
    info = optim.KFAC(model, loss).step(x, y, rng=np.random.default_rng(0))
    assert info["loss"] == h0
    assert np.isclose(info["step_norm"], np.linalg.norm(K.get_flat_params(model) - theta))
    assert set(info["times"]) == set(optim.PHASES) and all(t >= 0 for t in info["times"].values())


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_runs_on_every_backend(name, device, rng):
    loss = nn.CrossEntropyLoss()
    if name == "kfac-tridiag":  # consecutive Linear layers only (docs/math.md §11)
        model, (x, y) = tiny_mlp(sizes=(4, 5, 6, 3)).to(device), classification_batch(rng, 6, (4,), 3, device)
    else:
        model, (x, y) = tiny_convnet().to(device), classification_batch(rng, 6, (2, 6, 6), 3, device)
    opt = optim.make_optimizer(name, model, loss, lr=0.05)
    h0 = float(loss(model(x), y))
    for _ in range(5):
        opt.step(x, y, rng=np.random.default_rng(1))
    assert float(loss(model(x), y)) < h0


# --- bad hyper-parameters --------------------------------------------------------------
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda m, l: optim.SGD(m, l, lr=-0.1), r"lr \(η\) must be > 0"),
        (lambda m, l: optim.SGD(m, l, lr=0.1, momentum=1.5), r"momentum \(μ\) must be ≤ 1"),
        (lambda m, l: optim.SGD(m, l, lr=0.1, momentum=0.0, nesterov=True), "nesterov=True needs momentum"),
        (lambda m, l: optim.NGD(m, l, damping=-1.0), r"damping \(λ\) must be ≥ 0"),
        (lambda m, l: optim.NGD(m, l, kind="true"), "unknown Fisher kind 'true'"),
        (lambda m, l: optim.NGD(m, l, solver="cg"), "unknown solver 'cg'"),
        (lambda m, l: optim.NGD(m, l, solver="woodbury", damping=0.0), r"woodbury' needs damping \(λ\) > 0"),
        (lambda m, l: optim.KFAC(m, l, T_inv=0), "T_inv must be ≥ 1"),
        (lambda m, l: optim.KFAC(m, l, T_cov=1.5), "T_cov must be an integer"),
        (lambda m, l: optim.KFAC(m, l, ema_decay=1.0), "ema_decay"),
        (lambda m, l: optim.KFAC(m, l, damping_mode="magic"), "unknown damping_mode"),
        (lambda m, l: optim.KFAC(m, l, rescale=True, kl_clip=1e-3), "pass kl_clip=None with rescale=True"),
        (lambda m, l: optim.KFAC(m, l, lr=float("nan")), "lr .* must be finite"),
        (lambda m, l: optim.make_optimizer("adagrad", m, l), "unknown optimizer 'adagrad'"),
    ],
)
def test_bad_hyper_parameters_give_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make(tiny_mlp(), nn.CrossEntropyLoss())


def test_mc_kind_without_a_generator_is_a_clear_error(rng):
    model, loss = tiny_mlp(), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 4, (4,), 3)
    with pytest.raises(TypeError, match="rng=numpy.random.Generator"):
        optim.KFAC(model, loss, kind="mc").step(x, y)


def test_dense_ngd_refuses_a_fisher_too_large_for_memory():
    with pytest.raises(MemoryError, match="K-FAC"):
        optim.NGD(tiny_convnet(), nn.CrossEntropyLoss(), max_bytes=100)


def test_devices_agree_for_one_kfac_step(device, rng):
    if device == "cpu":
        pytest.skip("compares CuPy with NumPy: nothing to compare on the CPU alone")
    x, y = classification_batch(rng, 6, (2, 6, 6), 3)
    ref = tiny_convnet()
    optim.KFAC(ref, nn.CrossEntropyLoss(), momentum=0.0).step(x, y, rng=np.random.default_rng(3))
    other = tiny_convnet().to(device)
    optim.KFAC(other, nn.CrossEntropyLoss(), momentum=0.0).step(
        to_device(x, device), to_device(y, device), rng=np.random.default_rng(3)
    )
    assert rel_error(K.get_flat_params(other), K.get_flat_params(ref)) <= 1e-10


def test_kfac_statistics_on_a_fraction_of_the_batch(rng):
    """stats_fraction = 1/4: factors from x[:m] only; loss and gradient still of the whole batch."""
    model, loss = tiny_convnet(), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 8, (2, 6, 6), 3)
    ref = tiny_convnet()
    factors = fisher.kfac_factors(ref, loss, x[:2], y[:2], "exact")
    g = K.batch_grad(ref, loss, x, y)
    opt = optim.KFAC(
        model,
        loss,
        lr=0.5,
        momentum=0.0,
        damping=0.2,
        kind="exact",
        stats_fraction=0.25,
        kl_clip=None,
        damping_mode="exact",
    )
    info = opt.step(x, y)
    assert np.isclose(info["loss"], float(loss(ref(x), y)), rtol=1e-13)
    for (a, gg), (ar, gr) in zip(opt.curvature.factors, factors):
        assert rel_error(a, ar) <= 1e-12 and rel_error(gg, gr) <= 1e-12
    kfac_matrix = fisher.factors_to_dense(ref, factors)
    expected = K.get_flat_params(ref) - 0.5 * np.linalg.solve(kfac_matrix + 0.2 * np.eye(len(g)), g)
    assert rel_error(K.get_flat_params(model), expected) <= 1e-10
