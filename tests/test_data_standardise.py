"""Standardisation: a feature constant at a non-zero value is not divided by rounding noise.

The reference for "constant" is independent of the code's threshold: a column
whose training values are all exactly equal (np.ptp == 0).  Its σ, computed in
floating point, is ~1e-17 rather than 0; the code must still treat it as
constant, and leave the validation inputs finite and on the data's scale.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref.data import Dataset, load_mnist, standardise
from kfac_ref.data.dataset import constant_threshold


def _reference(x_train, x_val, axis):
    """(x − μ)/σ with σ := 1 exactly where the training values do not vary at all."""
    mu = x_train.mean(axis=axis, keepdims=True)
    sigma = x_train.std(axis=axis, keepdims=True)
    constant = np.ptp(x_train, axis=axis, keepdims=True) == 0
    sigma = np.where(constant, 1.0, sigma)
    return (x_train - mu) / sigma, (x_val - mu) / sigma, constant


@pytest.mark.parametrize("n", [10, 1797, 60_000])
@pytest.mark.parametrize("c", [0.1, 1 / 3, 7.3, -2.2e5, 3e-20])
def test_a_feature_constant_at_a_non_zero_value_is_not_divided_by_rounding_noise(n, c):
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((n, 4))
    x_train[:, 1] = c  # constant over the training set
    x_val = rng.standard_normal((7, 4))
    x_val[:, 1] = c + np.array([0.0, 1.0, -1.0, 2.0, 0.5, 0.0, 3.0])  # the validation set does vary

    out_train, out_val = standardise(x_train, x_val, axis=0)
    ref_train, ref_val, constant = _reference(x_train, x_val, 0)
    assert constant.ravel().tolist() == [False, True, False, False]
    assert np.abs(out_train[:, 1]).max() <= constant_threshold(c, n)  # c − μ̂: zero up to rounding
    assert np.all(np.isfinite(out_val)) and np.abs(out_val[:, 1]).max() <= 3.0 + 1e-9  # x − μ, not 1e17
    np.testing.assert_allclose(out_val[:, 1], [0.0, 1.0, -1.0, 2.0, 0.5, 0.0, 3.0], atol=1e-9 * max(1, abs(c)))
    np.testing.assert_allclose(out_train, ref_train, rtol=1e-12, atol=1e-12 * max(1, abs(c)))
    np.testing.assert_allclose(out_val, ref_val, rtol=1e-12, atol=1e-9 * max(1, abs(c)))


def test_a_constant_channel_of_float32_images_stays_finite():
    rng = np.random.default_rng(1)
    x = rng.random((50, 3, 4, 4)).astype(np.float32)
    x[:, 2] = np.float32(0.7)  # the blue channel is constant
    out_train, out_val = standardise(x, x[:5] + np.float32(0.25), axis=(0, 2, 3))
    assert out_train.dtype == np.float32 and np.abs(out_train[:, 2]).max() < 1e-6
    np.testing.assert_allclose(out_val[:, 2], 0.25, rtol=1e-6)


def test_a_feature_that_really_varies_by_a_tiny_relative_amount_is_still_standardised():
    """The threshold is relative to rounding, not a tolerance: a spread of 1e-9·|μ| is kept and scaled to 1."""
    rng = np.random.default_rng(2)
    x = 5.0 + 5e-9 * rng.standard_normal((1000, 1))
    sigma = x.std()
    assert sigma > 1e3 * constant_threshold(x.mean(), 1000)
    out, _ = standardise(x, x[:3], axis=0)
    assert abs(out.std() - 1) < 1e-6


def test_the_threshold_bounds_the_rounding_noise_of_constant_columns():
    """σ of an exactly constant column, over many values and lengths, stays below τ = n·ε·|μ| (measured < 0.2 τ)."""
    worst = 0.0
    for n in (3, 100, 1797, 100_000):
        for c in (0.1, 1 / 3, 7.3, 1e5 * np.pi, -0.3, 1e-300):
            x = np.full((n, 1), c)
            worst = max(worst, float(x.std(dtype=np.float64) / constant_threshold(c, n)))
    assert worst < 0.5


def test_zero_training_samples_are_reported_as_such_not_as_non_finite_values(tmp_path):
    with pytest.raises(ValueError, match=r"standardise: the training split has no samples"):
        standardise(np.zeros((0, 3)), np.ones((2, 3)), axis=0)
    with pytest.raises(ValueError, match=r"Dataset 'toy': the training split has no samples"):
        Dataset("toy", np.zeros((0, 2)), np.zeros(0, np.int64), np.ones((2, 2)), np.zeros(2, np.int64), num_classes=2)


def test_an_mnist_folder_with_zero_training_images_is_reported_as_such(tmp_path):
    from tests.test_data_idx import write_mnist

    write_mnist(tmp_path, np.random.default_rng(0), n_train=0)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte' holds no images, expected at least one"):
        load_mnist(tmp_path)
