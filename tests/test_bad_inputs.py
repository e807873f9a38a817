"""Bad input never gives a wrong answer: each case below is refused with an error naming the culprit."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import fisher, models, nn, optim
from kfac_ref.data import Dataset
from kfac_ref.data.synthetic import make_classification
from kfac_ref.errors import NonFiniteError
from kfac_ref.train import fit
from kfac_ref.validate import check_flag, check_number
from tests.helpers import tiny_mlp

CE, SE = nn.CrossEntropyLoss(), nn.SquaredErrorLoss()
F = np.random.default_rng(0).standard_normal((4, 3))  # (N, C) logits of 4 samples, 3 classes
Y = np.array([0, 1, 2, 1])
RNG = np.random.default_rng(1)

CE_METHODS = {
    "__call__": lambda f, y: CE(f, y),
    "per_sample": lambda f, y: CE.per_sample(f, y),
    "grad": lambda f, y: CE.grad(f, y),
}
SE_METHODS = {
    "__call__": lambda f, y: SE(f, y),
    "per_sample": lambda f, y: SE.per_sample(f, y),
    "grad": lambda f, y: SE.grad(f, y),
}
OUTPUT_ONLY = {
    "ce.sample": lambda f: CE.sample(f, np.random.default_rng(0)),
    "ce.output_fisher": CE.output_fisher,
    "ce.sqrt_output_fisher": CE.sqrt_output_fisher,
    "se.sample": lambda f: SE.sample(f, np.random.default_rng(0)),
    "se.output_fisher": SE.output_fisher,
    "se.sqrt_output_fisher": SE.sqrt_output_fisher,
    "ce.grad": lambda f: CE.grad(f, Y[: len(f)] % max(f.shape[1], 1)),
    "se.grad": lambda f: SE.grad(f, np.zeros(f.shape)),
}


# ---- losses -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(CE_METHODS))
def test_cross_entropy_refuses_a_label_out_of_range(method):
    with pytest.raises(
        ValueError,
        match=r"CrossEntropyLoss: labels must lie in \[0, 3\) for 3 outputs, "
        r"got 1 outside, values in \[0, 5\]",
    ):
        CE_METHODS[method](F, np.array([0, 1, 5, 2]))


@pytest.mark.parametrize("method", sorted(CE_METHODS))
def test_cross_entropy_refuses_a_negative_label(method):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*values in \[-1, 2\]"):
        CE_METHODS[method](F, np.array([0, -1, 2, 2]))


@pytest.mark.parametrize("method", sorted(CE_METHODS))
def test_cross_entropy_refuses_fractional_labels(method):
    with pytest.raises(TypeError, match=r"labels must be an integer array of shape \(4,\), got float64"):
        CE_METHODS[method](F, np.array([0, 0.5, 1, 2]))


@pytest.mark.parametrize("method", sorted(CE_METHODS))
def test_cross_entropy_refuses_a_list_of_labels(method):
    with pytest.raises(TypeError, match=r"labels must be an integer array of shape \(4,\), got list"):
        CE_METHODS[method](F, [0, 1, 2, 2])


@pytest.mark.parametrize("method", sorted(CE_METHODS))
def test_cross_entropy_refuses_too_few_labels(method):
    with pytest.raises(ValueError, match=r"labels have shape \(3,\), expected \(4,\) for 4 samples"):
        CE_METHODS[method](F, np.array([0, 1, 2]))


@pytest.mark.parametrize("method", sorted(SE_METHODS))
def test_squared_error_refuses_targets_of_another_shape(method):
    with pytest.raises(ValueError, match=r"SquaredErrorLoss: targets have shape \(4, 1\), expected \(4, 3\)"):
        SE_METHODS[method](F, np.zeros((4, 1)))


@pytest.mark.parametrize("method", sorted(SE_METHODS))
def test_squared_error_refuses_nan_targets(method):
    y = np.zeros((4, 3))
    y[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"SquaredErrorLoss: targets contain 1 NaN/Inf value\(s\)"):
        SE_METHODS[method](F, y)


@pytest.mark.parametrize("method", sorted(OUTPUT_ONLY))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_every_loss_method_refuses_nan_or_inf_logits(method, bad):
    f = F.copy()
    f[1, 2] = bad
    with pytest.raises(
        NonFiniteError, match=r"model outputs contain 1 NaN/Inf value\(s\) \(the loss likely diverged\)"
    ):
        OUTPUT_ONLY[method](f)


@pytest.mark.parametrize("method", sorted(OUTPUT_ONLY))
def test_every_loss_method_refuses_an_empty_batch(method):
    with pytest.raises(ValueError, match=r"the batch is empty \(model outputs of shape \(0, 3\)\)"):
        OUTPUT_ONLY[method](np.zeros((0, 3)))


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [np.inf, -np.inf]], ids=["nan", "inf", "inf-and-minus-inf"])
def test_model_input_with_nan_or_inf_is_refused_with_its_count(bad):
    model = models.mlp(4, hidden=(3,), num_classes=2, dtype=np.float32)
    x = np.ones((5, 4), dtype=np.float32)
    x.flat[: len(bad)] = bad
    with pytest.raises(ValueError, match=rf"model input contains {len(bad)} NaN/Inf value\(s\) out of 20"):
        model.forward(x)


def test_finite_model_input_whose_sum_overflows_is_accepted():
    """The one-pass check sums the input; a finite float32 input near its largest value overflows that
    sum and must still pass (counted element by element)."""
    model = models.mlp(4, hidden=(3,), num_classes=2, dtype=np.float32)
    x = np.full((5, 4), 3e38, dtype=np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(x.sum()) and np.isfinite(x).all()
    model.check_input(x)  # no error, and no warning


def test_sample_on_nan_logits_does_not_return_class_zero():
    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        CE.sample(np.full((2, 3), np.nan), np.random.default_rng(0))


def test_losses_refuse_integer_outputs():
    with pytest.raises(TypeError, match="CrossEntropyLoss: model outputs must be floating point, got int64"):
        CE.output_fisher(np.zeros((2, 3), dtype=np.int64))


def test_valid_calls_still_agree_with_the_formulas():
    p = np.exp(F) / np.exp(F).sum(1, keepdims=True)
    np.testing.assert_allclose(CE.grad(F, Y), p - np.eye(3)[Y], rtol=1e-13)
    np.testing.assert_allclose(CE.grad(F, np.stack([Y, Y])), np.stack([p - np.eye(3)[Y]] * 2), rtol=1e-13)
    np.testing.assert_allclose(SE.grad(F, np.zeros((2, 4, 3))), np.stack([F, F]))


# ---- flags and numbers ------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["False", "no", 1, 0, None, np.float64(1.0)])
def test_check_flag_refuses_anything_but_a_bool(value):
    with pytest.raises(
        TypeError, match=rf"nesterov must be True or False, got {value!r}".replace("(", r"\(").replace(")", r"\)")
    ):
        check_flag("nesterov", value)


def test_check_flag_accepts_bools():
    assert check_flag("x", True) is True and check_flag("x", np.bool_(False)) is False


def test_sgd_refuses_nesterov_given_as_a_string():
    with pytest.raises(TypeError, match=r"nesterov must be True or False, got 'False' \(str\)"):
        optim.SGD(tiny_mlp(), CE, nesterov="False")


@pytest.mark.parametrize(
    "make",
    [
        lambda m: optim.NGD(m, CE, damping=False),
        lambda m: optim.BlockNGD(m, CE, damping=True),
        lambda m: optim.KFAC(m, CE, damping=False),
        lambda m: fisher.dense_solve(np.eye(2), np.ones(2), False),
    ],
)
def test_damping_refuses_a_boolean(make):
    with pytest.raises(TypeError, match=r"damping \(λ\) must be a number, got (False|True)"):
        make(tiny_mlp())


@pytest.mark.parametrize("value", [np.bool_(True), True])
def test_numbers_refuse_booleans(value):
    with pytest.raises(TypeError, match=r"lr \(η\) must be a number, got"):
        check_number("lr (η)", value)


def test_nan_integer_hyper_parameter_says_it_must_be_finite():
    with pytest.raises(ValueError, match=r"T_inv must be finite, got nan"):
        check_number("T_inv", float("nan"), low=1, integer=True)
    with pytest.raises(ValueError, match=r"T_inv must be finite, got nan"):
        optim.KFAC(tiny_mlp(), CE, T_inv=float("nan"))


def test_max_bytes_must_be_positive():
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(ValueError, match=r"max_bytes must be a positive number of bytes"):
            optim.NGD(tiny_mlp(), CE, max_bytes=bad)


@pytest.mark.parametrize("kind", ["exact", "empirical"])
def test_mc_samples_with_a_kind_that_draws_nothing_is_refused(kind, rng):
    with pytest.raises(ValueError, match=rf"mc_samples=4 is only used by kind='mc'; kind='{kind}' draws no targets"):
        optim.NGD(tiny_mlp(), CE, kind=kind, mc_samples=4)
    x, y = rng.standard_normal((4, 4)), np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"mc_samples=4 is only used by kind='mc'"):
        fisher.kfac_factors(tiny_mlp(), CE, x, y, kind, mc_samples=4)


# ---- dtypes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int32, np.int64, bool, np.complex128])
def test_model_astype_refuses_a_non_floating_dtype(dtype):
    model = models.mlp(4, hidden=(3,), num_classes=2)
    before = K.get_flat_params(model).copy()
    with pytest.raises(TypeError, match=r"Sequential.astype: dtype must be a floating type \(float32 or float64\)"):
        model.astype(dtype)
    np.testing.assert_array_equal(K.get_flat_params(model), before)
    assert model.dtype == np.float64


def test_layer_constructors_refuse_a_non_floating_dtype():
    with pytest.raises(TypeError, match=r"Linear\(3→2\): dtype must be a floating type.*got int32"):
        nn.Linear(3, 2, dtype=np.int32)
    with pytest.raises(TypeError, match=r"Conv2d\(1→2\): dtype must be a floating type.*got int64"):
        nn.Conv2d(1, 2, 3, dtype=np.int64)
    with pytest.raises(TypeError, match=r"Linear\(3→2\).astype: dtype must be a floating type"):
        nn.Linear(3, 2).astype(np.int16)


# ---- divergence ----------------------------------------------------------------------------------
def _toy():
    x, y = make_classification(60, 5, 3, np.random.default_rng(0))
    return Dataset("toy", x[:40], y[:40], x[40:], y[40:], num_classes=3)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_an_update_that_overflows_theta_stops_the_run_and_keeps_its_history():
    model = models.mlp(5, hidden=(4,), num_classes=3)
    before = K.get_flat_params(model).copy()
    hist = fit(
        optim.SGD(model, CE, lr=1e300, weight_decay=1e300, momentum=0.0),
        _toy(),
        iterations=5,
        batch_size=8,
        eval_every=1,
    )
    assert hist.stopped is not None
    assert "stopped at iteration 1" in hist.stopped and "update overflowed" in hist.stopped
    assert [r["iteration"] for r in hist.records] == [0]  # the starting point is kept
    np.testing.assert_array_equal(K.get_flat_params(model), before)  # θ was not overwritten with Inf


def test_set_flat_params_refuses_inf_and_leaves_the_model():
    model = tiny_mlp()
    before = K.get_flat_params(model).copy()
    theta = before.copy()
    theta[0] = np.inf
    with pytest.raises(NonFiniteError, match=r"θ would contain 1 NaN/Inf value\(s\)"):
        K.set_flat_params(model, theta)
    np.testing.assert_array_equal(K.get_flat_params(model), before)


# ---- raw library messages replaced by kfac_ref's own, before any work --------------------------
def test_dense_solve_refuses_mismatched_shapes_in_its_own_words():
    from kfac_ref.fisher.solve import dense_solve

    f = np.eye(3)
    with pytest.raises(ValueError, match=r"dense_solve: g has shape \(4,\), expected \(P,\) or \(P, k\) with P = 3"):
        dense_solve(f, np.ones(4), 0.1)
    with pytest.raises(ValueError, match=r"dense_solve: the Fisher has shape \(3, 4\), expected a square \(P, P\)"):
        dense_solve(np.ones((3, 4)), np.ones(3), 0.1)
    np.testing.assert_allclose(dense_solve(2 * f, np.ones(3), 0.5), np.full(3, 0.4), rtol=1e-15)  # (2 + ½)⁻¹


@pytest.mark.parametrize(
    "seed, kind, match",
    [
        ("a", TypeError, "fit: seed must be a number, got 'a'"),
        (-1, ValueError, "fit: seed must be ≥ 0, got -1"),
        (1.5, ValueError, "fit: seed must be an integer, got 1.5"),
    ],
)
def test_fit_refuses_a_bad_seed_naming_it(seed, kind, match):
    model = tiny_mlp()
    before = K.get_flat_params(model).copy()
    x, y = make_classification(40, 4, 3, np.random.default_rng(0))
    data = Dataset("toy", x[:30], y[:30], x[30:], y[30:], num_classes=3)
    with pytest.raises(kind, match=match):
        fit(optim.SGD(model, nn.CrossEntropyLoss(), lr=0.1), data, 2, batch_size=8, seed=seed)
    np.testing.assert_array_equal(K.get_flat_params(model), before)


def test_fit_takes_a_generator_or_an_int_seed_alike():
    x, y = make_classification(40, 4, 3, np.random.default_rng(0))
    data = Dataset("toy", x[:30], y[:30], x[30:], y[30:], num_classes=3)
    runs = []
    for seed in (7, np.random.default_rng(7)):
        model = tiny_mlp()
        fit(optim.SGD(model, nn.CrossEntropyLoss(), lr=0.1), data, 3, batch_size=8, seed=seed)
        runs.append(K.get_flat_params(model))
    np.testing.assert_array_equal(*runs)


@pytest.mark.parametrize("make", [optim.KFAC, optim.EKFAC, optim.KFACTridiag])
def test_a_kronecker_factor_too_large_for_memory_is_refused_before_allocation(make):
    """A Linear layer with 400,000 inputs: A would be 400,001² float64 entries (1,192 GiB); the weights are 9.6 MB."""
    model = models.mlp(400_000, hidden=(), num_classes=3, seed=0)
    with pytest.raises(
        MemoryError,
        match=r"layer 0 \(Linear\(400000→3\)\)'s factor A of shape \(400001, 400001\) and float64 needs 1,192.1 GiB",
    ):
        make(model, nn.CrossEntropyLoss(), lr=0.1, damping=0.1)
    with pytest.raises(MemoryError, match=r"kfac_factors: layer 0"):
        fisher.kfac_factors(model, nn.CrossEntropyLoss(), np.zeros((2, 400_000)), np.zeros(2, dtype=int), "exact")
