"""A tampered checkpoint is refused before anything is applied: a refused load changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfac_ref import checkpoint, models, nn, optim
from kfac_ref.data import Dataset
from kfac_ref.data.synthetic import make_classification
from kfac_ref.train import Trainer
from tests.helpers import assert_trainer_unchanged, trainer_snapshot


def _data():
    x, y = make_classification(60, 5, 3, np.random.default_rng(0))
    return Dataset("toy", x[:40], y[:40], x[40:], y[40:], num_classes=3)


def _trainer(seed=0):
    opt = optim.SGD(models.mlp(5, hidden=(4,), num_classes=3, seed=seed), nn.CrossEntropyLoss(), lr=0.1, momentum=0.9)
    return Trainer(opt, _data(), 8, np.random.default_rng(seed), eval_every=2)


@pytest.fixture
def saved(tmp_path):
    t = _trainer(0)
    t.run(3)
    return checkpoint.save(tmp_path / "run.npz", t)


def _tamper(path, edit=None, arrays_edit=None, raw_meta=None):
    """Rewrite the checkpoint at ``path`` with its JSON (and arrays) edited."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    if edit is not None:
        edit(meta)
    if arrays_edit is not None:
        arrays_edit(arrays)
    text = raw_meta if raw_meta is not None else json.dumps(meta).encode()
    arrays["__meta__"] = np.frombuffer(text, dtype=np.uint8)
    out = path.with_name("tampered.npz")
    np.savez(out, **arrays)
    return out


def _set(*keys, value):
    def edit(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


@pytest.mark.parametrize(
    "keys, value, match",
    [
        (("opt_state", "steps"), -10, r"opt_state\['steps'\] is -10, expected an integer ≥ 0"),
        (("opt_state", "steps"), "abc", r"opt_state\['steps'\] is 'abc', expected an integer"),
        (("opt_state", "steps"), True, r"opt_state\['steps'\] is True, expected an integer"),
        (("trainer", "records"), "xyz", r"trainer\['records'\] is a str, expected a list of records"),
        (("trainer", "pos"), 10_000, r"trainer\['pos'\] is 10000, expected an integer in \[0, 40\]"),
        (("trainer", "seconds"), -1.0, r"trainer\['seconds'\] is -1.0, expected ≥ 0"),
        (("trainer", "rng", "state", "state"), "garbage", r"trainer\['rng'\] is not a valid PCG64 state"),
        (("trainer", "stopped"), 5, r"trainer\['stopped'\] is 5, expected a string or null"),
    ],
)
def test_tampered_state_is_refused_and_changes_nothing(saved, keys, value, match):
    trainer = _trainer(seed=5)
    trainer.run(1)
    before = trainer_snapshot(trainer)
    bad = _tamper(saved, _set(*keys, value=value))
    with pytest.raises(ValueError, match=match):
        checkpoint.load(bad, trainer)
    assert_trainer_unchanged(trainer, before)


def test_records_that_do_not_end_at_the_step_are_refused(saved):
    bad = _tamper(saved, _set("opt_state", "steps", value=1))
    with pytest.raises(ValueError, match=r"trainer\['records'\]\[\d\]\['iteration'\] is \d, expected an integer in"):
        checkpoint.load(bad, _trainer())


def test_velocity_of_the_wrong_shape_is_refused(saved):
    def shrink(arrays):
        key = next(k for k in arrays if k.endswith("velocity"))
        arrays[key] = arrays[key][:-1]

    trainer = _trainer(seed=5)
    before = trainer_snapshot(trainer)
    with pytest.raises(ValueError, match=r"opt_state\['velocity'\] is an array of shape \(38,\), expected \(39,\)"):
        checkpoint.load(_tamper(saved, arrays_edit=shrink), trainer)
    assert_trainer_unchanged(trainer, before)


def test_nan_parameters_are_refused(saved):
    def poison(arrays):
        key = next(k for k in arrays if k.endswith("params"))
        arrays[key] = arrays[key].copy()
        arrays[key][0] = np.nan

    with pytest.raises(ValueError, match="params is an array with NaN/Inf values"):
        checkpoint.load(_tamper(saved, arrays_edit=poison), _trainer())


def test_meta_that_is_not_json_is_a_value_error_naming_the_file(saved):
    bad = _tamper(saved, raw_meta=b"{not json")
    with pytest.raises(ValueError, match=r"tampered.npz: the __meta__ entry is not JSON"):
        checkpoint.load(bad, _trainer())


def test_meta_without_keys_is_a_value_error_naming_the_file(saved):
    bad = _tamper(saved, lambda m: m.pop("opt_state"))
    with pytest.raises(ValueError, match=r"tampered.npz: the checkpoint lacks opt_state"):
        checkpoint.load(bad, _trainer())


def test_a_missing_array_entry_is_a_value_error_naming_the_file(saved):
    bad = _tamper(saved, arrays_edit=lambda a: a.pop(next(k for k in a if k.endswith("params"))))
    with pytest.raises(ValueError, match=r"tampered.npz: __meta__ refers to the array 's/params'"):
        checkpoint.load(bad, _trainer())


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory, expected a .npz file"):
        checkpoint.load(tmp_path, _trainer())


def test_a_good_checkpoint_still_loads(saved):
    trainer = _trainer(seed=5)
    checkpoint.load(saved, trainer)
    assert trainer.opt.steps == 3 and trainer.history.records[-1]["iteration"] == 3
