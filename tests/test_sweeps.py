"""Sweeps: one hyper-parameter varied, everything else (θ₀, batches, settings) held fixed."""

from __future__ import annotations

import math

import pytest

from kfac_ref.backend import to_numpy
from kfac_ref.experiments import compare, sweeps
from kfac_ref.params import get_flat_params


@pytest.fixture(scope="module")
def setup():
    cfg = compare.CompareConfig(model="mlp", hidden=(8,), iterations=6, batch_size=32, eval_every=2, max_train=200)
    data = compare.load_data(cfg)
    return cfg, data


def test_a_sweep_changes_only_the_swept_value(setup):
    cfg, data = setup
    runs = sweeps.sweep(cfg, "kfac", "damping", [0.1, 1.0], data=data)
    assert [r["value"] for r in runs] == [0.1, 1.0] and all(r["param"] == "damping" for r in runs)
    base = compare.settings_for(cfg, "kfac")
    for run, lam in zip(runs, (0.1, 1.0)):
        assert run["settings"] == {**base, "damping": lam}
        assert run["records"][-1]["iteration"] == cfg.iterations and run["stopped"] is None
    # Same θ₀: the starting losses agree; different λ: the trajectories differ.
    assert runs[0]["records"][0]["train_loss"] == runs[1]["records"][0]["train_loss"]
    assert sweeps.final(runs[0]) != sweeps.final(runs[1])


def test_a_sweep_value_equal_to_the_default_reproduces_run_one(setup):
    cfg, data = setup
    default = compare.settings_for(cfg, "kfac")["T_inv"]
    theta0 = to_numpy(get_flat_params(compare.build_model(cfg, data)))
    [run] = sweeps.sweep(cfg, "kfac", "T_inv", [default], iterations=4, data=data)
    ref = compare.run_one(cfg, "kfac", compare.settings_for(cfg, "kfac"), data, theta0, 4)
    assert [r["batch_loss"] for r in run["records"]] == [r["batch_loss"] for r in ref["records"]]


def test_readers_pick_the_measured_values():
    records = [
        {"iteration": 0, "seconds": 0.0, "train_loss": 2.0},
        {"iteration": 1, "seconds": 0.5, "train_loss": None},
        {"iteration": 2, "seconds": 1.0, "train_loss": 1.0},
        {"iteration": 3, "seconds": 1.5, "train_loss": None},
    ]
    run = {"records": records}
    assert sweeps.final(run) == 1.0
    assert sweeps.final(run, "val_loss") is None
    assert sweeps.value_at(run, iteration=1) == 2.0 and sweeps.value_at(run, iteration=3) == 1.0
    assert sweeps.value_at(run, seconds=0.9) == 2.0 and sweeps.value_at(run, seconds=1.0) == 1.0
    assert sweeps.value_at(run, seconds=-1) is None
    assert sweeps.seconds_per_iteration(run) == 0.5
    assert sweeps.seconds_per_iteration({"records": records[:1]}) is None
    with pytest.raises(ValueError, match="exactly one"):
        sweeps.value_at(run, iteration=1, seconds=1.0)


def test_an_empty_sweep_is_refused(setup):
    cfg, data = setup
    with pytest.raises(ValueError, match="no values"):
        sweeps.sweep(cfg, "sgd", "lr", [], data=data)


def test_draw_sweep_draws_one_labelled_finite_line_per_value():
    from matplotlib.figure import Figure

    runs = [
        {
            "param": "damping",
            "value": v,
            "records": [
                {"iteration": 0, "seconds": 0.0, "train_loss": 2.0},
                {"iteration": 1, "seconds": 0.1, "train_loss": math.nan if v > 1 else 1.0},
            ],
        }
        for v in (0.1, 3.0)
    ]
    ax = Figure().subplots()
    sweeps.draw_sweep(ax, runs)
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["damping = 0.1", "damping = 3"]
    assert len(lines[1].get_xdata()) == 1  # the NaN point is left out
