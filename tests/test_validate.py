"""The shared argument checks (kfac_ref.validate) and the one rule for None as a generator.

Each check is tested on both sides of its boundary, with the error type a user
catches and the message naming the argument; the generator rule against
``numpy.random.default_rng`` itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import fisher, nn, validate
from kfac_ref.data.synthetic import make_classification
from kfac_ref.experiments import fisher_plot
from kfac_ref.validate import NotANumberError, as_rng, check_damping, check_positive_int


# ---- damping: one validator, two strictnesses ----------------------------------------------
@pytest.mark.parametrize("strict", [False, True])
def test_damping_accepts_positive_numbers_as_floats(strict):
    for value in (0.5, 3, np.float32(0.25), np.int64(2)):
        out = check_damping(value, strict=strict)
        assert type(out) is float and out == float(value)


def test_zero_damping_is_allowed_only_when_not_strict():
    assert check_damping(0.0) == 0.0
    with pytest.raises(ValueError, match=r"damping \(λ\) must be a finite number > 0, got 0.0"):
        check_damping(0.0, strict=True)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), -float("inf")])
def test_negative_or_non_finite_damping_is_a_value_error(strict, value):
    with pytest.raises(ValueError, match=r"gamma \(λ\) must be"):
        check_damping(value, "gamma", strict=strict)


@pytest.mark.parametrize("value", ["0.1", None, True, np.bool_(False), [0.1]])
def test_damping_that_is_not_a_number_is_both_a_type_and_a_value_error(value):
    # the optimizers have always raised TypeError here, fisher_plot ValueError: both still catch it
    for caught in (TypeError, ValueError, NotANumberError):
        with pytest.raises(caught, match=r"damping \(λ\) must be a number"):
            check_damping(value)


def test_every_damped_function_uses_the_one_validator():
    # the same non-number is refused the same way by a solver, an optimizer and the figure's check
    assert fisher.kron.check_damping is fisher.solve.check_damping is fisher.curvature.check_damping is check_damping
    assert fisher_plot.check_damping is check_damping


# ---- numbers, flags, sizes ------------------------------------------------------------------
def test_the_optimizers_use_the_one_number_and_flag_checks():
    from kfac_ref.optim import base, preconditioned

    assert base.check_number is preconditioned.check_number is validate.check_number
    assert preconditioned.check_flag is validate.check_flag


@pytest.mark.parametrize(
    "value, ok", [(1, True), (np.int64(7), True), (0, False), (-2, False), (True, False), (2.0, False), ("3", False)]
)
def test_positive_int(value, ok):
    if ok:
        check_positive_int("f", n=value)
    else:
        with pytest.raises(ValueError, match=rf"f: n must be a positive integer, got {value!r}"):
            check_positive_int("f", n=value)


def test_linear_sizes_go_through_the_positive_int_check():
    with pytest.raises(ValueError, match="Linear: out_features must be a positive integer, got 0"):
        nn.Linear(3, 0)


# ---- the one RNG rule -----------------------------------------------------------------------
def test_a_generator_is_passed_through_and_a_seed_is_default_rng_of_it():
    g = np.random.default_rng(5)
    assert as_rng(g, "f") is g
    np.testing.assert_array_equal(as_rng(11, "f").random(4), np.random.default_rng(11).random(4))
    np.testing.assert_array_equal(as_rng(np.int32(11), "f").random(4), np.random.default_rng(11).random(4))


def test_none_is_refused_unless_the_caller_names_a_default_seed():
    with pytest.raises(TypeError, match=r"f: rng must be a np.random.Generator or an int seed, got NoneType"):
        as_rng(None, "f")
    np.testing.assert_array_equal(as_rng(None, "f", default=3).random(4), np.random.default_rng(3).random(4))
    with pytest.raises(TypeError, match=r"f: rng must be a np.random.Generator, an int seed or None, got bool"):
        as_rng(True, "f", default=0)


def test_layers_document_seed_zero_for_none_and_data_refuses_none():
    a, b = nn.Linear(4, 3, rng=None), nn.Linear(4, 3, rng=0)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    with pytest.raises(TypeError, match="make_classification: rng must be a np.random.Generator or an int seed"):
        make_classification(10, 2, 2, None)
