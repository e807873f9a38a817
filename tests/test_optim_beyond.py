"""The block-tridiagonal K-FAC and EKFAC optimizers against dense solves (docs/math.md §11–§12).

Every step is compared with an independent reference: the dense damped F̂ of
:func:`fisher.tridiag_to_dense` (pseudo-inverse chain, [MG15] §4.3) or the dense EKFAC
matrix of :func:`fisher.ekfac_dense`, solved by ``numpy.linalg.solve``.
"""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import checkpoint, fisher, models, nn, optim
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.data import Dataset, load_digits
from kfac_ref.data.synthetic import make_classification
from kfac_ref.fisher.ekfac import EKFACInverse, eigenbasis_scalings
from kfac_ref.fisher.kfac import wbar_block_to_param_order
from kfac_ref.gradcheck import rel_error
from kfac_ref.train import Trainer, fit
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp

EXACT = {"kind": "exact", "momentum": 0.0, "kl_clip": None}  # the plain step δ = −η F̃_γ⁻¹ ∇h


def _deep_linear(device):
    """Linear → Linear → Linear, no activations (docs/math.md §8.2)."""
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2), seed=0).to(device)


CASES = {  # name: (model, loss, batch)
    "one-sample-tanh-ce": lambda rng, dev: (
        tiny_mlp(sizes=(4, 5, 6, 3)).to(dev),
        nn.CrossEntropyLoss(),
        classification_batch(rng, 1, (4,), 3, dev),
    ),
    "16-samples-tanh-ce": lambda rng, dev: (
        tiny_mlp(sizes=(4, 5, 6, 3)).to(dev),
        nn.CrossEntropyLoss(),
        classification_batch(rng, 16, (4,), 3, dev),
    ),
    "deep-linear-squared-error": lambda rng, dev: (
        _deep_linear(dev),
        nn.SquaredErrorLoss(),
        regression_batch(rng, 12, (3,), 2, dev),
    ),
}


def _step(opt, x, y):
    theta = K.get_flat_params(opt.model)
    opt.step(x, y)
    return to_numpy(K.get_flat_params(opt.model) - theta)


# --- one step equals the dense solve -------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_kfac_tridiag_step_is_the_dense_solve_with_the_damped_tridiagonal_fisher(case, device, rng):
    model, loss, (x, y) = CASES[case](rng, device)
    lr, lam = 0.5, 0.1
    diag, cross = fisher.tridiag_factors(model, loss, x, y, "exact")
    f_hat = to_numpy(fisher.tridiag_to_dense(model, diag, cross, lam))  # damped F̂_γ (P, P)
    grad = to_numpy(K.loss_and_grad(model, loss, x, y).grad)
    expected = -lr * np.linalg.solve(f_hat, grad)
    step = _step(optim.KFACTridiag(model, loss, lr=lr, damping=lam, **EXACT), x, y)
    assert rel_error(step, expected) <= 1e-10


@pytest.mark.parametrize("case", sorted(CASES) + ["convnet"])
def test_ekfac_step_is_the_dense_solve_with_the_damped_ekfac_matrix(case, device, rng):
    if case == "convnet":
        model, loss = tiny_convnet().to(device), nn.CrossEntropyLoss()
        x, y = classification_batch(rng, 5, (2, 6, 6), 3, device)
    else:
        model, loss, (x, y) = CASES[case](rng, device)
    lr, lam = 0.5, 0.1
    f_ekfac = to_numpy(fisher.ekfac_dense(model, loss, x, y, "exact"))  # undamped (P, P)
    grad = to_numpy(K.loss_and_grad(model, loss, x, y).grad)
    expected = -lr * np.linalg.solve(f_ekfac + lam * np.eye(len(grad)), grad)
    step = _step(optim.EKFAC(model, loss, lr=lr, damping=lam, **EXACT), x, y)
    assert rel_error(step, expected) <= 1e-10


def test_ekfac_with_weight_decay_damps_with_lambda_plus_eta(rng):
    """γ = λ + η_wd, and ∇h gains η_wd θ, as in K-FAC."""
    model, loss, (x, y) = CASES["16-samples-tanh-ce"](rng, "cpu")
    lr, lam, wd = 0.5, 0.1, 0.01
    theta = K.get_flat_params(model)
    f_ekfac = fisher.ekfac_dense(model, loss, x, y, "exact")
    grad = K.loss_and_grad(model, loss, x, y).grad + wd * theta
    expected = -lr * np.linalg.solve(f_ekfac + (lam + wd) * np.eye(len(grad)), grad)
    step = _step(optim.EKFAC(model, loss, lr=lr, damping=lam, weight_decay=wd, **EXACT), x, y)
    assert rel_error(step, expected) <= 1e-10


# --- the schedules ---------------------------------------------------------------------------
def test_tridiag_cross_factors_share_the_diagonal_factors_moving_average(rng):
    """A_{l,l+1}, G_{l,l+1} ← ε_k X + (1 − ε_k) X_batch with the diagonal factors' ε_k (§11)."""
    model, loss, (x, y) = CASES["16-samples-tanh-ce"](rng, "cpu")
    opt = optim.KFACTridiag(model, loss, lr=0.3, damping=0.1, ema_decay=0.6, **EXACT)
    want_diag, want_cross = None, None
    for k in range(1, 5):
        diag, cross = fisher.tridiag_factors(model, loss, x, y, "exact")  # the batch values at θ_k
        eps = min(1 - 1 / k, 0.6)
        want_diag = (
            diag
            if want_diag is None
            else [[eps * o + (1 - eps) * b for o, b in zip(old, new)] for old, new in zip(want_diag, diag)]
        )
        want_cross = (
            cross
            if want_cross is None
            else [[eps * o + (1 - eps) * b for o, b in zip(old, new)] for old, new in zip(want_cross, cross)]
        )
        opt.step(x, y)
        for got, want in zip(opt.curvature.factors + opt.curvature.cross_factors, want_diag + want_cross):
            assert rel_error(got[0], want[0]) <= 1e-12 and rel_error(got[1], want[1]) <= 1e-12


def test_tridiag_inverses_are_refreshed_every_T_inv_steps(rng):
    model, loss, (x, y) = CASES["16-samples-tanh-ce"](rng, "cpu")
    opt = optim.KFACTridiag(model, loss, lr=0.3, damping=0.1, T_inv=3, **EXACT)
    refreshed = []
    for _ in range(7):
        before = opt.curvature.inverse
        opt.step(x, y)
        refreshed.append(opt.curvature.inverse is not before)
    assert refreshed == [True, False, False, True, False, False, True]


def test_ekfac_bases_every_T_inv_scalings_every_T_scale_and_after_each_new_basis(rng):
    """Bases at k ≡ 0 (mod T_inv); S refitted at k ≡ 0 (mod T_scale) and at every new basis,
    as a moving average S ← ε_j S + (1 − ε_j) S_batch that restarts with each basis."""
    model, loss, (x, y) = CASES["16-samples-tanh-ce"](rng, "cpu")
    opt = optim.EKFAC(model, loss, lr=0.3, damping=0.1, T_inv=4, T_scale=3, ema_decay=0.8, **EXACT)
    new_bases, new_scalings = [], []
    for _k in range(10):
        bases, scalings = opt.curvature.bases, opt.curvature.scalings
        stats, _ = fisher.fisher_stats(model, loss, x, y, "exact")  # this step's statistics, at θ_k
        opt.step(x, y)
        new_bases.append(opt.curvature.bases is not bases)
        new_scalings.append(opt.curvature.scalings is not scalings)
        # a new basis diagonalises the moving-average factors of its step
        for (u_a, u_g), (a, g) in zip(opt.curvature.bases, opt.curvature.factors) if new_bases[-1] else ():
            for u, m in ((u_a, a), (u_g, g)):
                rot = u.T @ m @ u
                assert np.abs(rot - np.diag(np.diag(rot))).max() <= 1e-12 * np.abs(m).max()
        if new_scalings[-1]:
            batch = [
                eigenbasis_scalings(u_a, u_g, st.a_bar, st.g) for (u_a, u_g), st in zip(opt.curvature.bases, stats)
            ]
            if new_bases[-1]:  # j = 1: the batch value in the new basis
                want = batch
            else:
                eps = min(1 - 1 / opt.curvature.scale_updates, 0.8)
                want = [eps * s + (1 - eps) * b for s, b in zip(scalings, batch)]
            for got, w in zip(opt.curvature.scalings, want):
                assert rel_error(got, w) <= 1e-12
    assert [k for k, b in enumerate(new_bases) if b] == [0, 4, 8]
    assert [k for k, s in enumerate(new_scalings) if s] == [0, 3, 4, 6, 8, 9]
    assert opt.curvature.scale_updates == 2  # steps 8 (new basis) and 9


def test_ekfac_damping_follows_a_levenberg_marquardt_change_at_once(rng):
    """EKFAC's damping is exact (S + λ), so λ adapted by LM is used at the next step."""
    model, loss, (x, y) = CASES["16-samples-tanh-ce"](rng, "cpu")
    opt = optim.EKFAC(model, loss, lr=0.3, damping=0.5, T_inv=10, T_scale=10, adapt_damping=True, T_adapt=1, **EXACT)
    opt.step(x, y)
    assert opt.damping != 0.5
    res = K.loss_and_grad(model, loss, x, y)
    got = to_numpy(opt.precondition(res.layer_grads))  # with the inverses of the step taken
    dense = fisher.blocks_to_dense(
        model,
        [
            wbar_block_to_param_order(layer, layer, inv.dense())
            for layer, inv in zip(
                model.param_layers(),
                [
                    EKFACInverse(u_a, u_g, sc, 0.0)
                    for (u_a, u_g), sc in zip(opt.curvature.bases, opt.curvature.scalings)
                ],
            )
        ],
    )
    assert rel_error(got, np.linalg.solve(dense + opt.damping * np.eye(model.num_params), res.grad)) <= 1e-10


# --- construction errors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: optim.KFACTridiag(tiny_convnet(), nn.CrossEntropyLoss()),
            r"consecutive Linear layers, but parameter layers 0 and 1 are Conv2d",
        ),
        (lambda: optim.make_optimizer("kfac-tridiag", tiny_convnet(), nn.CrossEntropyLoss()), "Conv2d"),
        (
            lambda: optim.KFACTridiag(tiny_mlp(), nn.CrossEntropyLoss(), damping_mode="exact"),
            "damping_mode='exact' is not defined for the block-tridiagonal",
        ),
        (lambda: optim.EKFAC(tiny_mlp(), nn.CrossEntropyLoss(), T_scale=0), "T_scale must be ≥ 1"),
        (lambda: optim.EKFAC(tiny_mlp(), nn.CrossEntropyLoss(), T_scale=1.5), "T_scale must be an integer"),
    ],
)
def test_bad_constructions_name_the_culprit(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_both_are_registered_with_their_names():
    assert optim.OPTIMIZERS["kfac-tridiag"] is optim.KFACTridiag and optim.KFACTridiag.name == "kfac-tridiag"
    assert optim.OPTIMIZERS["ekfac"] is optim.EKFAC and optim.EKFAC.name == "ekfac"
    assert optim.EKFAC(tiny_mlp(), nn.CrossEntropyLoss()).hyper()["T_scale"] == 1  # [GLBV18]
    assert optim.KFACTridiag(tiny_mlp(), nn.CrossEntropyLoss()).kl_clip == 1e-3  # K-FAC's safeguard


# --- state -------------------------------------------------------------------------------------
def _toy_data(seed=0):
    x, y = make_classification(120, 5, 3, np.random.default_rng(seed))
    return Dataset("toy", x[:90], y[:90], x[90:], y[90:], num_classes=3)


BEYOND = {
    "kfac-tridiag": lambda m: optim.KFACTridiag(
        m, nn.CrossEntropyLoss(), lr=0.2, T_inv=3, kind="mc", adapt_damping=True, T_adapt=2
    ),
    "kfac-tridiag-rescaled": lambda m: optim.KFACTridiag(
        m, nn.CrossEntropyLoss(), lr=1.0, damping=0.1, rescale=True, kl_clip=None, T_inv=4, T_cov=2
    ),
    "ekfac": lambda m: optim.EKFAC(
        m, nn.CrossEntropyLoss(), lr=0.2, T_inv=4, T_scale=3, kind="mc", adapt_damping=True, T_adapt=2
    ),
}


@pytest.mark.parametrize("name", sorted(BEYOND))
def test_checkpoint_resume_equals_an_uninterrupted_run(name, tmp_path):
    """Bit for bit: parameters, losses, damping, factors, cross factors, bases, scalings."""
    data = _toy_data()
    model = models.mlp(5, hidden=(8, 6), num_classes=3, seed=4)
    straight = Trainer(BEYOND[name](model), data, 16, np.random.default_rng(7), eval_every=4)
    straight.run(11)

    first = Trainer(
        BEYOND[name](models.mlp(5, hidden=(8, 6), num_classes=3, seed=4)),
        data,
        16,
        np.random.default_rng(7),
        eval_every=4,
    )
    first.run(7)  # between refreshes of T_inv and T_scale: the saved curvature must be used
    checkpoint.save(tmp_path / "ckpt.npz", first)

    model_b = models.mlp(5, hidden=(8, 6), num_classes=3, seed=99)
    resumed = Trainer(BEYOND[name](model_b), data, 16, np.random.default_rng(123), eval_every=4)
    checkpoint.load(tmp_path / "ckpt.npz", resumed)
    resumed.run(11)

    np.testing.assert_array_equal(K.get_flat_params(model_b), K.get_flat_params(model))
    assert [r["batch_loss"] for r in resumed.history.records] == [r["batch_loss"] for r in straight.history.records]
    assert resumed.opt.state_dict().keys() == straight.opt.state_dict().keys()
    assert resumed.opt.damping == straight.opt.damping


@pytest.mark.parametrize("name", ["kfac-tridiag", "ekfac"])
def test_state_round_trips_on_every_backend(name, device, rng):
    """state_dict is NumPy; loading it on the device and stepping gives the same parameters."""
    model, loss, (x, y) = CASES["16-samples-tanh-ce"](rng, device)
    make = {"kfac-tridiag": optim.KFACTridiag, "ekfac": optim.EKFAC}[name]
    hyper = {"lr": 0.2, "T_inv": 3, "kind": "exact"} | ({"T_scale": 2} if name == "ekfac" else {})
    opt = make(model, loss, **hyper)
    for _ in range(4):
        opt.step(x, y)
    state = opt.state_dict()
    arrays = []
    checkpoint._split(state, {}, "s")  # checkpointable: plain data only
    _collect(state, arrays)
    assert arrays and all(isinstance(a, np.ndarray) for a in arrays)

    twin_model, _, _ = CASES["16-samples-tanh-ce"](np.random.default_rng(0), device)
    K.set_flat_params(twin_model, K.get_flat_params(model))
    twin = make(twin_model, loss, **hyper)
    twin.load_state_dict(state)
    opt.step(x, y)
    twin.step(x, y)
    np.testing.assert_array_equal(to_numpy(K.get_flat_params(twin_model)), to_numpy(K.get_flat_params(model)))


def _collect(obj, out):
    if isinstance(obj, dict):
        for v in obj.values():
            _collect(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect(v, out)
    elif hasattr(obj, "shape"):
        out.append(obj)


# --- on the digits ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_digits(flatten=True)


@pytest.mark.parametrize("name", ["kfac-tridiag", "ekfac"])
def test_on_digits_the_default_method_lowers_the_loss_within_40_steps(name, digits):
    model = models.mlp(64, hidden=(32, 16))  # three Linear layers: two cross-layer pairs
    opt = optim.make_optimizer(name, model, nn.CrossEntropyLoss())
    hist = fit(opt, digits, iterations=40, batch_size=128, seed=0, eval_every=40)
    first, last = hist.records[0]["train_loss"], hist.records[-1]["train_loss"]
    assert hist.stopped is None
    assert last < 0.5 * first, (name, first, last)


def test_devices_agree_for_one_step(device, rng):
    if device == "cpu":
        pytest.skip("compares the device with NumPy: nothing to compare on the CPU alone")
    x, y = classification_batch(rng, 8, (4,), 3)
    for make in (optim.KFACTridiag, optim.EKFAC):
        ref, other = tiny_mlp(sizes=(4, 5, 6, 3)), tiny_mlp(sizes=(4, 5, 6, 3)).to(device)
        make(ref, nn.CrossEntropyLoss(), lr=0.3, kind="mc").step(x, y, rng=np.random.default_rng(3))
        make(other, nn.CrossEntropyLoss(), lr=0.3, kind="mc").step(
            to_device(x, device), to_device(y, device), rng=np.random.default_rng(3)
        )
        assert rel_error(to_numpy(K.get_flat_params(other)), K.get_flat_params(ref)) <= 1e-10
