"""The autoencoding task: pixels kept in [0, 1], the reconstruction dataset, the deep autoencoder
and its Bernoulli loss, run through compare and the race on small synthetic stand-ins."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfac_ref import grads as K
from kfac_ref import models, nn
from kfac_ref.data import Dataset, load_dataset, load_digits
from kfac_ref.experiments import race
from kfac_ref.experiments.compare import CompareConfig, build_model, load_data, loss_for, run_compare
from kfac_ref.gradcheck import numerical_param_grad, rel_error
from tests.test_data_idx import write_mnist


def test_unstandardised_pixels_are_the_raw_values_scaled_to_the_unit_interval(tmp_path):
    raw = write_mnist(tmp_path / "f", np.random.default_rng(0))
    d = load_dataset("fashion-mnist", tmp_path / "f", standardise_pixels=False)
    np.testing.assert_array_equal(d.x_train[:, 0], raw["train-images"] / 255)
    np.testing.assert_array_equal(d.x_val[:, 0], raw["t10k-images"] / 255)
    from sklearn.datasets import load_digits as sk_digits

    digits = load_digits(standardise_pixels=False, flatten=True)
    assert digits.x_train.min() == 0 and digits.x_train.max() == 1
    # every row is one of the raw images / 16 (the split only reorders them)
    raw16 = {tuple(r) for r in np.asarray(sk_digits().data) / 16}
    assert all(tuple(r) in raw16 for r in digits.x_val)


def test_reconstruction_targets_are_the_flattened_inputs():
    d = load_digits(standardise_pixels=False).reconstruction()
    assert d.task == "reconstruction" and d.name == "digits-autoencoder" and d.num_classes == 64
    assert d.x_train.shape == d.y_train.shape == (d.n_train, 64)
    np.testing.assert_array_equal(d.y_val, d.x_val)
    f32 = d.astype(np.float32)
    assert f32.x_train.dtype == f32.y_train.dtype == np.float32  # the targets follow the inputs' dtype
    assert d.subset(n_train=5).y_train.shape == (5, 64)


def test_bad_reconstructions_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        load_digits().reconstruction()  # standardised pixels are not Bernoulli means
    x = np.full((3, 4), 0.5)
    with pytest.raises(ValueError, match=r"floating \(N, 5\)"):
        Dataset("t", x, x, x, x, num_classes=5, task="reconstruction")
    with pytest.raises(ValueError, match="task must be one of"):
        Dataset("t", x, np.zeros(3, int), x, np.zeros(3, int), num_classes=2, task="regression")
    with pytest.raises(ValueError, match="already a reconstruction"):
        Dataset("t", x, x, x, x, num_classes=4, task="reconstruction").reconstruction()


def test_autoencoder_layers_mirror_the_encoder_with_a_linear_code():
    m = models.autoencoder(12, widths=(8, 5, 3), activation="tanh", seed=0)
    linear = [(layer.in_features, layer.out_features) for layer in m.layers if isinstance(layer, nn.Linear)]
    assert linear == [(12, 8), (8, 5), (5, 3), (3, 5), (5, 8), (8, 12)]
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds[kinds.index("Linear", 4) + 1] == "Linear"  # the code layer (5 → 3) has no activation
    assert kinds.count("Tanh") == 4 and kinds[-1] == "Linear"


def test_autoencoder_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    m = models.autoencoder(6, widths=(5, 2), seed=3)
    x = rng.uniform(size=(4, 6))
    loss_fn = nn.SigmoidCrossEntropyLoss()
    assert rel_error(K.batch_grad(m, loss_fn, x, x), numerical_param_grad(m, loss_fn, x, x)) <= 1e-6


def test_compare_trains_the_autoencoder_with_the_bernoulli_loss(tmp_path):
    cfg = CompareConfig(model="autoencoder", hidden=(16, 4), optimizers=("sgd", "kfac"), iterations=6,
                        eval_every=3, batch_size=64, max_train=256, dtype="float64")  # fmt: skip
    data = load_data(cfg)
    assert isinstance(loss_for(data), nn.SigmoidCrossEntropyLoss)
    assert build_model(cfg, data)(data.x_val[:2]).shape == (2, 64)
    summary = run_compare(cfg, tmp_path / "out", log=lambda *a: None)
    hist = json.loads((tmp_path / "out" / "history.json").read_text())
    for run in hist["runs"]:
        losses = [r["train_loss"] for r in run["records"] if r["train_loss"] is not None]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0]
        assert all(r["val_acc"] is None or np.isnan(r["val_acc"]) for r in run["records"])  # no accuracy here
    assert summary is not None
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "train loss ≤" in text and "val acc ≥" not in text  # no accuracy targets for a reconstruction


def test_fashion_autoencoder_race_runs_on_a_synthetic_stand_in(tmp_path):
    """The workload's set-up (data, network, loss, targets) on 28×28 IDX files of random pixels."""
    write_mnist(tmp_path / "f", np.random.default_rng(0), n_train=160, n_val=16, h=28, w=28)
    doc = race.run_race("fashion-autoencoder", tmp_path / "out", data_dir=tmp_path / "f", trials=1, seeds=1,
                        is_quick=True, log=lambda *a: None)  # fmt: skip
    assert doc["workload"] == "fashion-autoencoder" and doc["config"]["model"] == "autoencoder"
    assert [t["metric"] for t in doc["targets"]] == [t.metric for t in race.WORKLOADS["fashion-autoencoder"].targets]
    assert doc["search_spaces"]["sgd"] == race.WORKLOADS["fashion-autoencoder"].space("sgd")[:1]
    kfac = doc["methods"]["kfac"]
    assert set(kfac["default"]) >= {"settings", "seeds"} | {t["name"] for t in doc["targets"]}
    first = kfac["trials"][0]["records"][0]
    assert first["train_loss"] > 300  # summed over the 784 pixels (≈ 784 log 2 at the start), not averaged
