"""Every checkpoint entry is checked against what the model implies before anything is applied.

Also the entries a fresh optimizer holds as None (EKFAC's bases and scalings, the tridiagonal
cross factors and inverse, K-FAC's inverses, δ₀, the inverse's γ, Adam's moments): a wrong
shape, a NaN, a negative scaling or second moment, a basis that is not orthonormal, another
batch size or dtype — each is a ValueError naming the entry and what was expected, and the
trainer is left exactly as it was.  Every optimizer's own checkpoint still loads and resumes
the uninterrupted run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import checkpoint, models, nn, optim
from kfac_ref.data import Dataset
from kfac_ref.data.synthetic import make_classification
from kfac_ref.train import Trainer
from tests.helpers import assert_trainer_unchanged, trainer_snapshot

# mlp(5, (4,), 3): layer 0 W̄ (4, 6), layer 1 W̄ (3, 5); P = 24 + 15 = 39
P = 39
LOSS = nn.CrossEntropyLoss()
OPTS = {
    "sgd": lambda m: optim.SGD(m, LOSS, lr=0.1, momentum=0.9),
    "adam": lambda m: optim.Adam(m, LOSS, lr=0.01, amsgrad=True),
    "ngd": lambda m: optim.NGD(m, LOSS, lr=0.5, damping=0.1, ema_decay=0.5),
    "block-ngd": lambda m: optim.BlockNGD(m, LOSS, lr=0.5, damping=0.1),
    "diag-ngd": lambda m: optim.OPTIMIZERS["diag-ngd"](m, LOSS, lr=0.1, damping=0.1),
    "kfac": lambda m: optim.KFAC(m, LOSS, lr=0.2, damping=0.1, T_inv=2),
    "kfac-exact": lambda m: optim.KFAC(m, LOSS, lr=1.0, damping=0.1, damping_mode="exact", rescale=True, kl_clip=None),
    "kfac-tridiag": lambda m: optim.KFACTridiag(m, LOSS, lr=0.2, damping=0.3),
    "ekfac": lambda m: optim.EKFAC(m, LOSS, lr=0.2, damping=0.1),
}


def _data():
    x, y = make_classification(60, 5, 3, np.random.default_rng(0))
    return Dataset("toy", x[:40], y[:40], x[40:], y[40:], num_classes=3)


def _trainer(name, seed=0, batch_size=8, dtype=np.float64):
    model = models.mlp(5, hidden=(4,), num_classes=3, seed=seed, dtype=dtype)
    return Trainer(OPTS[name](model), _data().astype(dtype), batch_size, np.random.default_rng(seed), eval_every=2)


def _saved(tmp_path, name, steps=3):
    t = _trainer(name)
    t.run(steps)
    return checkpoint.save(tmp_path / f"{name}.npz", t)


def _rewrite(path, edit):
    """The checkpoint at ``path`` with its state edited (``edit(state)``), in the same format."""
    state = checkpoint.read(path)
    edit(state)
    arrays: dict = {}
    meta = checkpoint._split(state, arrays, "s")
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = path.with_name("edited.npz")
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("name", sorted(OPTS))
def test_every_optimizers_checkpoint_loads_and_resumes_the_uninterrupted_run(tmp_path, name):
    path = _saved(tmp_path, name)
    resumed = _trainer(name, seed=5)
    checkpoint.load(path, resumed)
    resumed.run(6)
    straight = _trainer(name)
    straight.run(6)
    np.testing.assert_array_equal(K.get_flat_params(resumed.opt.model), K.get_flat_params(straight.opt.model))


def _set(value, *keys):
    def edit(state):
        d = state["opt_state"]
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value(d[keys[-1]]) if callable(value) else value

    return edit


def _neg(a):
    a = np.array(a)
    a.flat[0] = -1.0
    return a


def _rotate(a):
    return 2.0 * np.asarray(a)  # not orthonormal


CASES = [
    # name, edit, message
    (
        "ekfac",
        _set(np.ones((4, 1)), "scalings", 0),
        r"opt_state\['scalings'\]\[0\] is an array of shape \(4, 1\), expected \(4, 6\)",
    ),
    (
        "ekfac",
        _set(_neg, "scalings", 1),
        r"opt_state\['scalings'\]\[1\] has an entry -1.0 < 0, expected every entry ≥ 0",
    ),
    (
        "ekfac",
        _set(np.eye(5), "bases", 0, 0),
        r"opt_state\['bases'\]\[0\]\[0\] is an array of shape \(5, 5\), expected \(6, 6\)",
    ),
    ("ekfac", _set(_rotate, "bases", 1, 1), r"opt_state\['bases'\]\[1\]\[1\] is not orthonormal"),
    ("ekfac", _set(None, "bases"), r"opt_state\['bases'\] is missing \(null\), expected a list of 2 entries"),
    ("ekfac", _set(np.full((4, 6), np.nan), "scalings", 0), r"opt_state\['scalings'\]\[0\] is an array with NaN/Inf"),
    (
        "kfac-tridiag",
        _set(np.zeros((6, 6)), "cross_factors", 0, 0),
        r"opt_state\['cross_factors'\]\[0\]\[0\] is an array of shape \(6, 6\), expected \(6, 5\)",
    ),
    (
        "kfac-tridiag",
        _set(np.zeros((4, 4)), "inverses", "psi", 0, 1),
        r"opt_state\['inverses'\]\['psi'\]\[0\]\[1\] is an array of shape \(4, 4\), expected \(4, 3\)",
    ),
    ("kfac-tridiag", _set(_neg, "inverses", "denom", 0), r"opt_state\['inverses'\]\['denom'\] has an entry ≤ 0"),
    (
        "kfac",
        _set(np.eye(3), "inverses", 0, "a_inv"),
        r"opt_state\['inverses'\]\[0\]\['a_inv'\] is an array of shape \(3, 3\), expected \(6, 6\)",
    ),
    ("kfac", _set(None, "inverses"), r"opt_state\['inverses'\] and opt_state\['inverse_damping'\] must both be set"),
    ("kfac-exact", _set(_neg, "inverses", 1, "d_g"), r"opt_state\['inverses'\]\[1\]\['d_g'\] has an entry -1.0 < 0"),
    (
        "kfac-exact",
        _set(np.zeros(P - 1), "prev_delta"),
        r"opt_state\['prev_delta'\] is an array of shape \(38,\), expected \(39,\)",
    ),
    ("kfac", _set(-0.5, "inverse_damping"), r"opt_state\['inverse_damping'\] is -0.5, expected ≥ 0"),
    ("kfac", _set(float("inf"), "inverse_damping"), r"opt_state\['inverse_damping'\] is inf, expected a finite number"),
    ("kfac", _set(0.0, "damping"), r"opt_state\['damping'\] is 0.0: damping_mode='factored' needs damping \(λ\) > 0"),
    (
        "kfac",
        _set(np.zeros((6, 6)), "factors", 1, 0),
        r"opt_state\['factors'\]\[1\]\[0\] is an array of shape \(6, 6\), expected \(5, 5\)",
    ),
    (
        "ngd",
        _set(np.zeros((P, P - 1)), "fisher"),
        r"opt_state\['fisher'\] is an array of shape \(39, 38\), expected \(39, 39\)",
    ),
    ("diag-ngd", _set(_neg, "diagonal", 0), r"opt_state\['diagonal'\]\[0\] has an entry -1.0 < 0"),
    (
        "adam",
        _set(np.zeros(P + 1), "exp_avg"),
        r"opt_state\['exp_avg'\] is an array of shape \(40,\), expected \(39,\)",
    ),
    ("adam", _set(_neg, "exp_avg_sq"), r"opt_state\['exp_avg_sq'\] has an entry -1.0 < 0, expected every entry ≥ 0"),
    ("adam", _set(_neg, "max_exp_avg_sq"), r"opt_state\['max_exp_avg_sq'\] has an entry -1.0 < 0"),
    (
        "sgd",
        _set(np.zeros((P, 1)), "velocity"),
        r"opt_state\['velocity'\] is an array of shape \(39, 1\), expected \(39,\)",
    ),
]


@pytest.mark.parametrize("name, edit, match", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_bad_state_entry_is_refused_naming_it_and_changes_nothing(tmp_path, name, edit, match):
    bad = _rewrite(_saved(tmp_path, name), edit)
    trainer = _trainer(name, seed=5)
    trainer.run(1)
    before = trainer_snapshot(trainer)
    with pytest.raises(ValueError, match=match):
        checkpoint.load(bad, trainer)
    assert_trainer_unchanged(trainer, before)


@pytest.mark.parametrize("name", ["kfac", "ekfac", "kfac-tridiag"])
def test_a_checkpoint_resumed_with_another_batch_size_is_refused_naming_both(tmp_path, name):
    path = _saved(tmp_path, name)
    trainer = _trainer(name, batch_size=10)
    before = trainer_snapshot(trainer)
    with pytest.raises(ValueError, match=r"saved with batch size 8; this run's batch size is 10"):
        checkpoint.load(path, trainer)
    assert_trainer_unchanged(trainer, before)


def test_a_checkpoint_resumed_in_another_dtype_is_refused_naming_both(tmp_path):
    path = _saved(tmp_path, "kfac")
    trainer = _trainer("kfac", dtype=np.float32)
    before = trainer_snapshot(trainer)
    with pytest.raises(ValueError, match=r"saved from a float64 model; this run's model is float32"):
        checkpoint.load(path, trainer)
    assert_trainer_unchanged(trainer, before)
