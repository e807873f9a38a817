"""The training loop, determinism, checkpoints, and the methods on the digits data."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import checkpoint, models, nn, optim
from kfac_ref.data import Dataset, load_digits
from kfac_ref.data.synthetic import make_classification
from kfac_ref.train import RECORD_FIELDS, Trainer, evaluate, fit


@pytest.fixture(scope="module")
def digits():
    return load_digits(flatten=True)


def _toy_data(seed=0):
    x, y = make_classification(120, 5, 3, np.random.default_rng(seed))
    return Dataset("toy", x[:90], y[:90], x[90:], y[90:], num_classes=3)


def _kfac(model):
    return optim.KFAC(model, nn.CrossEntropyLoss(), lr=0.2, T_inv=3, kind="mc", adapt_damping=True, T_adapt=2)


OPTS = {
    "sgd": lambda m: optim.SGD(m, nn.CrossEntropyLoss(), lr=0.1, momentum=0.9, nesterov=True),
    "ngd": lambda m: optim.NGD(m, nn.CrossEntropyLoss(), lr=0.5, damping=0.1, kind="mc", ema_decay=0.5, momentum=0.5),
    "block-ngd": lambda m: optim.BlockNGD(m, nn.CrossEntropyLoss(), lr=0.5, damping=0.1, ema_decay=0.5),
    "kfac": _kfac,
    "kfac-rescaled": lambda m: optim.KFAC(
        m,
        nn.CrossEntropyLoss(),
        lr=1.0,
        damping=0.1,
        rescale=True,
        kl_clip=None,
        damping_mode="exact",
        T_inv=4,
        adapt_damping=True,
        T_adapt=2,
    ),
}


def test_records_have_the_documented_fields_and_timing_excludes_evaluation():
    data = _toy_data()
    model = models.mlp(5, hidden=(8,), num_classes=3)
    hist = fit(OPTS["sgd"](model), data, iterations=7, batch_size=16, eval_every=3)
    assert [r["iteration"] for r in hist.records] == list(range(8))
    for r in hist.records:
        assert tuple(r) == RECORD_FIELDS
    measured = [r["iteration"] for r in hist.records if r["train_loss"] is not None]
    assert measured == [0, 3, 6, 7]  # every 3 iterations, the start and the end
    assert hist.records[0]["batch_loss"] is None and hist.records[0]["seconds"] == 0.0
    secs = [r["seconds"] for r in hist.records]
    assert all(b >= a for a, b in zip(secs, secs[1:]))
    # The recorded full losses are the model's losses, not estimates.
    loss, acc = evaluate(model, nn.CrossEntropyLoss(), data.x_val, data.y_val)
    assert hist.records[-1]["val_loss"] == loss and hist.records[-1]["val_acc"] == acc
    assert np.isclose(loss, float(nn.CrossEntropyLoss()(model(data.x_val), data.y_val)))


@pytest.mark.parametrize("name", sorted(OPTS))
def test_same_seed_same_history(name):
    runs = []
    for _ in range(2):
        model = models.mlp(5, hidden=(8,), num_classes=3, seed=4)
        hist = fit(OPTS[name](model), _toy_data(), iterations=8, batch_size=16, seed=7, eval_every=4)
        runs.append(([{k: v for k, v in r.items() if k != "seconds"} for r in hist.records], K.get_flat_params(model)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("name", sorted(OPTS))
def test_save_load_continue_equals_an_uninterrupted_run(name, tmp_path):
    """Bit for bit on NumPy: parameters, records, damping, factors, generator."""
    data = _toy_data()
    model = models.mlp(5, hidden=(8,), num_classes=3, seed=4)
    straight = Trainer(OPTS[name](model), data, 16, np.random.default_rng(7), eval_every=4)
    straight.run(11)

    model_a = models.mlp(5, hidden=(8,), num_classes=3, seed=4)
    first = Trainer(OPTS[name](model_a), data, 16, np.random.default_rng(7), eval_every=4)
    first.run(7)  # not a refresh step of T_inv = 3 or 4: the saved inverses must be used
    checkpoint.save(tmp_path / "ckpt.npz", first)

    model_b = models.mlp(5, hidden=(8,), num_classes=3, seed=99)  # different init: must be overwritten
    resumed = Trainer(OPTS[name](model_b), data, 16, np.random.default_rng(123), eval_every=4)
    checkpoint.load(tmp_path / "ckpt.npz", resumed)
    resumed.run(11)

    np.testing.assert_array_equal(K.get_flat_params(model_b), K.get_flat_params(model))
    # Same mini-batch losses at every iteration; the interrupted run also measured
    # the full losses at its stopping point (iteration 7), which changes nothing else.
    assert [r["batch_loss"] for r in resumed.history.records] == [r["batch_loss"] for r in straight.history.records]
    for r, s in zip(resumed.history.records, straight.history.records):
        if s["train_loss"] is not None:
            assert (r["train_loss"], r["val_loss"], r["val_acc"]) == (s["train_loss"], s["val_loss"], s["val_acc"])
    assert resumed.opt.state_dict().keys() == straight.opt.state_dict().keys()
    if hasattr(straight.opt, "damping"):
        assert resumed.opt.damping == straight.opt.damping


def test_checkpoint_is_plain_arrays_and_refuses_garbage(tmp_path):
    data = _toy_data()
    trainer = Trainer(_kfac(models.mlp(5, hidden=(8,), num_classes=3)), data, 16, np.random.default_rng(0))
    trainer.run(3)
    path = checkpoint.save(tmp_path / "run.npz", trainer)
    with np.load(path, allow_pickle=False) as z:  # loads with pickling disabled
        assert "__meta__" in z.files
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable kfac_ref checkpoint"):
        checkpoint.load(bad, trainer)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing.npz", trainer)
    other = Trainer(OPTS["sgd"](models.mlp(5, hidden=(8,), num_classes=3)), data, 16, np.random.default_rng(0))
    with pytest.raises(ValueError, match="holds a 'kfac' run, not 'sgd'"):
        checkpoint.load(path, other)
    changed = Trainer(
        optim.KFAC(
            models.mlp(5, hidden=(8,), num_classes=3),
            nn.CrossEntropyLoss(),
            lr=0.2,
            T_inv=3,
            kind="mc",
            adapt_damping=True,
            T_adapt=2,
            damping_mode="exact",
        ),
        data,
        16,
        np.random.default_rng(0),
    )
    with pytest.raises(ValueError, match=r"other hyper-parameters: damping_mode='factored' \(now 'exact'\)"):
        checkpoint.load(path, changed)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverging_run_stops_with_a_message_and_keeps_its_records():
    data = _toy_data()
    model = models.mlp(5, hidden=(8,), num_classes=3)
    hist = fit(
        optim.SGD(model, nn.CrossEntropyLoss(), lr=1e6, momentum=0.9), data, iterations=50, batch_size=16, eval_every=1
    )
    assert hist.stopped is not None and "stopped at iteration" in hist.stopped
    assert 1 <= len(hist.records) < 51


def test_bad_loop_arguments(digits):
    model = models.mlp(64, hidden=(8,))
    opt = optim.SGD(model, nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="batch_size must be ≤ the 1438 training samples"):
        Trainer(opt, digits, 5000, np.random.default_rng(0))
    with pytest.raises(ValueError, match="eval_every must be ≥ 1"):
        Trainer(opt, digits, 32, np.random.default_rng(0), eval_every=0)
    with pytest.raises(TypeError, match="Generator"):
        Trainer(opt, digits, 32, 0)


def test_on_digits_every_method_lowers_the_loss_and_second_order_beats_sgd(digits):
    """The default settings of each class, the same batches, the same number of iterations."""
    final = {}
    for name, cls in optim.OPTIMIZERS.items():
        model = models.mlp(64, hidden=(16,))
        hist = fit(cls(model, nn.CrossEntropyLoss()), digits, iterations=40, batch_size=128, seed=0, eval_every=40)
        first, last = hist.records[0]["train_loss"], hist.records[-1]["train_loss"]
        assert hist.stopped is None
        assert last < first, name
        final[name] = last
    assert final["kfac"] < final["sgd"]
    assert final["ngd"] < final["sgd"]


def test_the_training_figures_use_a_fixed_documented_subset_and_equal_a_per_sample_loop():
    """eval_train = 50 of 90: the same 50 samples in every run, whatever its seed; the recorded loss and
    accuracy equal a loop over those samples one at a time (float64, 1e-12), and 'all' (None) gives the
    figures over every training sample, as before."""
    from kfac_ref.train import EVAL_SEED, describe_eval, eval_subset

    data = _toy_data()
    idx = eval_subset(90, 50)
    assert idx.shape == (50,) and np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert np.array_equal(idx, np.sort(np.random.default_rng(EVAL_SEED).permutation(90)[:50]))
    assert eval_subset(90, 90) is None and eval_subset(90, None) is None and eval_subset(90, 10_000) is None
    assert describe_eval(90, 50) == f"a fixed subset of 50 of the 90 training samples (seed {EVAL_SEED})"
    assert describe_eval(90, None) == describe_eval(90, 200) == "all 90 training samples"
    loss_fn = nn.CrossEntropyLoss()
    for seed in (0, 1):
        for size, rows in ((50, idx), (None, np.arange(90))):
            model = models.mlp(5, hidden=(4,), num_classes=3, seed=3)
            trainer = Trainer(
                optim.SGD(model, loss_fn, lr=0.1), data, 30, np.random.default_rng(seed), 2, eval_train=size
            )
            rec = trainer.run(2).records[-1]
            f = [model(data.x_train[i : i + 1]) for i in rows]  # one sample at a time
            losses = [float(loss_fn.per_sample(fi, data.y_train[i : i + 1])[0]) for fi, i in zip(f, rows)]
            hits = [int(fi.argmax(axis=1)[0] == data.y_train[i]) for fi, i in zip(f, rows)]
            assert rec["train_loss"] == pytest.approx(sum(losses) / len(rows), rel=1e-12, abs=0)
            assert rec["train_acc"] == sum(hits) / len(rows)
            val, _ = evaluate(model, loss_fn, data.x_val, data.y_val)
            assert rec["val_loss"] == pytest.approx(val, rel=1e-12, abs=0)  # the whole validation set
