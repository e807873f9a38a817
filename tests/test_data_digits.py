"""The digits loader and the Dataset container it returns."""

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from kfac_ref.data import Dataset, load_dataset, load_digits, stratified_split

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def raw():
    bunch = sklearn_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


# ---- load_digits -------------------------------------------------------------------------
def test_shapes_dtypes_and_split_sizes(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.x_train.shape == (digits.n_train, 1, 8, 8)
    assert digits.x_val.shape == (digits.n_val, 1, 8, 8)
    assert digits.input_shape == (1, 8, 8)
    assert digits.n_train + digits.n_val == N_DIGITS
    assert digits.x_train.dtype == np.float64 and digits.y_train.dtype == np.int64


def test_validation_size_is_the_rounded_fraction_of_each_class(raw):
    _, y = raw
    for fraction in (0.2, 0.5):
        ds = load_digits(val_fraction=fraction)
        expected = sum(round(fraction * np.count_nonzero(y == c)) for c in range(10))
        assert ds.n_val == expected


def test_flatten_gives_64_features(digits):
    flat = load_digits(flatten=True)
    assert flat.x_train.shape == (digits.n_train, 64)
    np.testing.assert_array_equal(flat.x_train, digits.x_train.reshape(-1, 64))


def test_same_seed_same_split_other_seed_other_split(digits):
    again = load_digits(seed=0)
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_val, digits.y_val)
    other = load_digits(seed=1)
    assert not np.array_equal(other.y_train, digits.y_train)


def test_training_pixels_have_mean_0_and_std_1(digits, raw):
    x = digits.x_train.reshape(digits.n_train, 64)
    std = x.std(axis=0)
    varying = std > 0
    assert varying.sum() > 50  # most pixels vary; a few border pixels are constant
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(std[varying], 1, rtol=1e-12)
    np.testing.assert_array_equal(x[:, ~varying], 0)  # constant pixel: (x − μ)/1 = 0


def test_both_splits_use_training_statistics(raw):
    x_raw, y_raw = raw
    train_idx, val_idx = stratified_split(y_raw, 0.2, np.random.default_rng(0))
    mu = x_raw[train_idx].mean(axis=0)
    sigma = x_raw[train_idx].std(axis=0)
    sigma[sigma == 0] = 1
    ds = load_digits(val_fraction=0.2, seed=0, flatten=True)
    np.testing.assert_allclose(ds.x_train, (x_raw[train_idx] - mu) / sigma, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.x_val, (x_raw[val_idx] - mu) / sigma, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ds.y_val, y_raw[val_idx])


def test_split_is_a_stratified_partition(raw):
    _, y = raw
    train_idx, val_idx = stratified_split(y, 0.2, np.random.default_rng(3))
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(N_DIGITS))
    for c in range(10):
        n_c = np.count_nonzero(y == c)
        n_val_c = np.count_nonzero(y[val_idx] == c)
        assert n_val_c == round(0.2 * n_c) and np.count_nonzero(y[train_idx] == c) == n_c - n_val_c


def test_seed_changes_which_images_are_held_out(raw):
    _, y = raw
    val_0 = stratified_split(y, 0.2, np.random.default_rng(0))[1]
    val_0_again = stratified_split(y, 0.2, np.random.default_rng(0))[1]
    val_1 = stratified_split(y, 0.2, np.random.default_rng(1))[1]
    np.testing.assert_array_equal(val_0, val_0_again)
    assert set(val_0.tolist()) != set(val_1.tolist())


def test_every_class_in_both_splits_even_for_extreme_fractions():
    for fraction in (0.001, 0.999):
        ds = load_digits(val_fraction=fraction)
        assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_val.tolist())


def test_float32_option():
    ds = load_digits(dtype=np.float32)
    assert ds.x_train.dtype == np.float32 and ds.x_val.dtype == np.float32


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_val_fraction_outside_open_interval_is_refused(fraction):
    with pytest.raises(ValueError, match=r"val_fraction must lie in \(0, 1\)"):
        load_digits(val_fraction=fraction)


def test_integer_dtype_is_refused():
    with pytest.raises(ValueError, match="load_digits: dtype must be floating"):
        load_digits(dtype=np.int32)


# ---- Dataset -----------------------------------------------------------------------------
def _toy(**overrides):
    fields = dict(
        name="toy",
        x_train=np.zeros((4, 3)),
        y_train=np.array([0, 1, 2, 0]),
        x_val=np.ones((2, 3)),
        y_val=np.array([1, 2]),
        num_classes=3,
    )
    fields.update(overrides)
    return Dataset(**fields)


def test_dataset_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="x_train has 4 samples but y_train has 3"):
        _toy(y_train=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="x_val has 2 samples but y_val has 1"):
        _toy(y_val=np.array([1]))


def test_dataset_refuses_labels_out_of_range_or_not_integer():
    with pytest.raises(ValueError, match=r"y_train has 1 labels outside \[0, 3\)"):
        _toy(y_train=np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"y_val has 1 labels outside \[0, 3\)"):
        _toy(y_val=np.array([-1, 0]))
    with pytest.raises(ValueError, match="y_train must hold integer class indices, got dtype float64"):
        _toy(y_train=np.array([0.0, 1.0, 2.0, 0.0]))


def test_dataset_refuses_non_finite_inputs_and_counts_them():
    x = np.zeros((4, 3))
    x[0, 0], x[2, 1], x[3, 2] = np.nan, np.inf, -np.inf
    with pytest.raises(ValueError, match=r"x_train has 3 non-finite values"):
        _toy(x_train=x)


def test_dataset_refuses_other_shape_problems():
    with pytest.raises(ValueError, match=r"x_val has per-sample shape \(4,\), expected \(3,\)"):
        _toy(x_val=np.ones((2, 4)))
    with pytest.raises(ValueError, match="x_train must be a floating array"):
        _toy(x_train=np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        _toy(num_classes=0)


def test_dataset_is_frozen():
    ds = _toy()
    with pytest.raises(AttributeError):
        ds.name = "other"


def test_flat_astype_subset_to_cpu(digits):
    flat = digits.flat()
    assert flat.input_shape == (64,) and flat.n_train == digits.n_train
    single = digits.astype(np.float32)
    assert single.x_val.dtype == np.float32 and single.y_val.dtype == np.int64
    small = digits.subset(n_train=10, n_val=5)
    assert (small.n_train, small.n_val) == (10, 5)
    np.testing.assert_array_equal(small.x_train, digits.x_train[:10])
    np.testing.assert_array_equal(small.y_val, digits.y_val[:5])
    assert digits.subset(n_val=3).n_train == digits.n_train
    same = digits.to("cpu")
    assert same.device == "cpu" and same.x_train is digits.x_train
    assert "train=(1438, 1, 8, 8)" in repr(digits)


def test_subset_larger_than_available_is_refused(digits):
    with pytest.raises(ValueError, match=rf"n_train=5000 must be an integer in \[0, {digits.n_train}\]"):
        digits.subset(n_train=5000)


# ---- load_dataset ------------------------------------------------------------------------
def test_load_dataset_by_name(digits):
    ds = load_dataset("digits")
    np.testing.assert_array_equal(ds.y_train, digits.y_train)


def test_load_dataset_unknown_name_lists_choices():
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'imagenet': expected one of \('digits', 'mnist', 'fashion-mnist', 'cifar10'\)",
    ):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    "name, folder", [("mnist", "data/mnist"), ("fashion-mnist", "data/fashion-mnist"), ("cifar10", "data/cifar10")]
)
def test_load_dataset_without_folder_says_which_folder(name, folder):
    with pytest.raises(ValueError, match=rf"needs data_dir.*{folder}.*data/README.md"):
        load_dataset(name)
