"""The race's rules against brute force, and race.json's picks recomputed from its saved trials."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest

from kfac_ref.experiments import race
from kfac_ref.experiments.race import Target, pick, reach, single_pick, spread

LOSS = Target("loss ≤ 1", "train_loss", "<=", 1.0)
ACC = Target("acc ≥ 0.5", "val_acc", ">=", 0.5)


def records(points):
    """Records with (iteration, seconds, train_loss, val_acc); None where not measured."""
    return [{"iteration": i, "seconds": s, "train_loss": l, "val_acc": a} for i, s, l, a in points]


def test_reach_is_the_first_record_that_meets_the_target():
    recs = records([(0, 0.0, 2.0, 0.1), (5, 1.0, None, None), (10, 2.0, 0.9, 0.4), (15, 3.0, 0.5, 0.6)])
    assert reach(recs, LOSS) == (10, 2.0)
    assert reach(recs, ACC) == (15, 3.0)
    assert reach(recs, Target("never", "train_loss", "<=", 0.1)) is None
    nan = records([(0, 0.0, math.nan, None)])
    assert reach(nan, Target("any", "train_loss", "<=", 10.0)) is None  # a NaN meets nothing


def test_pick_takes_fewest_iterations_then_fewest_seconds_then_the_earlier_trial():
    trials = [
        {"records": records([(0, 0, 2, 0), (20, 1.0, 0.5, 0.6)])},
        {"records": records([(0, 0, 2, 0), (10, 3.0, 0.5, 0.0)])},
        {"records": records([(0, 0, 2, 0), (10, 2.0, 0.5, 0.0)])},
        {"records": records([(0, 0, 2, 0), (10, 2.0, 0.5, 0.0)])},
    ]
    assert pick(trials, LOSS) == 2  # 10 iterations twice; 2.0 s beats 3.0 s; trial 2 before its twin 3
    assert pick(trials, ACC) == 0
    assert pick(trials, Target("never", "train_loss", "<=", 0.0)) is None


def test_single_pick_prefers_more_targets_then_fewer_iterations_summed():
    fast_loss_only = {"records": records([(0, 0, 2, 0), (5, 1, 0.5, 0.1)])}
    both_slow = {"records": records([(0, 0, 2, 0), (30, 6, 0.5, 0.6)])}
    both_fast = {"records": records([(0, 0, 2, 0), (20, 4, 0.5, 0.6)])}
    assert single_pick([fast_loss_only, both_slow], [LOSS, ACC]) == 1  # two targets beat one
    assert single_pick([fast_loss_only, both_slow, both_fast], [LOSS, ACC]) == 2


def test_spread_counts_a_miss_as_infinitely_slow():
    assert spread([3, 1, 2]) == {"median": 2, "min": 1, "max": 3, "reached": 3, "of": 3}
    s = spread([3, None, 2])
    assert (s["median"], s["min"], s["max"], s["reached"]) == (3, 2, None, 2)  # median of 2, 3, ∞
    assert spread([None, None, 4])["median"] is None  # most seeds missed: not reached


@pytest.fixture(scope="module")
def quick_race(tmp_path_factory):
    """A --quick digits race with targets its short budget reaches (the real ones need the full budget)."""
    easy = (Target("train loss ≤ 2.25", "train_loss", "<=", 2.25), Target("val acc ≥ 0.2", "val_acc", ">=", 0.2))
    saved = race.WORKLOADS["digits-convnet"]
    race.WORKLOADS["digits-convnet"] = replace(saved, targets=easy)
    try:
        out = tmp_path_factory.mktemp("race")
        race.run_race("digits-convnet", out, trials=2, seeds=2, seed=5, is_quick=True, log=lambda *a: None)
    finally:
        race.WORKLOADS["digits-convnet"] = saved
    return out, json.loads((out / "race.json").read_text())


def test_race_json_has_the_documented_fields(quick_race):
    out, doc = quick_race
    assert doc["workload"] == "digits-convnet" and doc["tuning_seed"] == 5 and doc["seeds"] == [6, 7]
    assert [set(t) for t in doc["targets"]] == [{"name", "metric", "op", "value"}] * 2
    for m in ("sgd", "adam", "kfac"):
        res = doc["methods"][m]
        for trial in res["trials"]:
            assert {"settings", "seed", "records"} <= set(trial)
            assert {"iteration", "seconds", "train_loss", "val_loss", "val_acc"} <= set(trial["records"][0])
        assert set(res["picks"]) == {t["name"] for t in doc["targets"]}
    assert (out / "summary.md").exists() and (out / "race.png").stat().st_size > 0


def test_every_pick_is_recomputed_from_the_saved_trials(quick_race):
    """Brute force from race.json alone: the tuning trials, the rule, and each re-run's first hit."""
    _, doc = quick_race
    for res in doc["methods"].values():
        tuning = [t for t in res["trials"] if t["seed"] == doc["tuning_seed"]][: doc["trials_per_method"]]
        for t in doc["targets"]:
            best = None
            for i, trial in enumerate(tuning):
                first = next((r for r in trial["records"] if _met(r, t)), None)
                if first is not None and (best is None or (first["iteration"], first["seconds"]) < best[0]):
                    best = ((first["iteration"], first["seconds"]), i)
            p = res["picks"][t["name"]]
            assert p["trial"] == (None if best is None else best[1])
            if best is None:
                continue
            assert p["settings"] == tuning[p["trial"]]["settings"]
            for seed, iters, secs in zip(p["seeds"], p["iterations"], p["seconds"]):
                rerun = next(r for r in res["trials"] if r["seed"] == seed and r["settings"] == p["settings"])
                first = next((r for r in rerun["records"] if _met(r, t)), None)
                assert (iters, secs) == ((first["iteration"], first["seconds"]) if first else (None, None))


def test_single_and_default_hits_are_recomputed_from_the_saved_trials(quick_race):
    """The one configuration's and compare's defaults' per-seed hits, from their re-runs in race.json."""
    _, doc = quick_race
    for res in doc["methods"].values():
        entries = [res["single"]] + ([res["default"]] if "default" in res else [])
        for entry in entries:
            for t in doc["targets"]:
                for k, seed in enumerate(doc["seeds"]):
                    rerun = next(r for r in res["trials"] if r["seed"] == seed and r["settings"] == entry["settings"])
                    first = next((r for r in rerun["records"] if _met(r, t)), None)
                    got = (entry[t["name"]]["iterations"][k], entry[t["name"]]["seconds"][k])
                    assert got == ((first["iteration"], first["seconds"]) if first else (None, None))
    assert "default" in doc["methods"]["kfac"] and "default" not in doc["methods"]["sgd"]
    tables = json.loads((quick_race[0] / "race-tables.json").read_text())
    assert tables["methods"]["kfac"]["picks"] == doc["methods"]["kfac"]["picks"]
    assert all("trials" not in res for res in tables["methods"].values())
    assert race.format_race(tables) == (quick_race[0] / "summary.md").read_text()  # the tables need no trials


def test_set_replaces_compares_settings_in_every_trial_and_in_the_defaults_check(tmp_path):
    from kfac_ref.experiments import compare

    doc = race.run_race("digits-convnet", tmp_path / "r", methods=("kfac",), trials=1, seeds=1, is_quick=True,
                        settings={"kfac": compare.AMORTISED_KFAC}, log=lambda *a: None)  # fmt: skip
    res = doc["methods"]["kfac"]
    for entry in [*res["trials"], res["default"]]:
        damping = entry["settings"]["damping"]
        assert entry["settings"] == {**compare.DEFAULT_SETTINGS["kfac"], "damping": damping, **compare.AMORTISED_KFAC}
    assert res["default"]["settings"]["damping"] == compare.DEFAULT_SETTINGS["kfac"]["damping"]
    assert "kfac runs with {" in (tmp_path / "r" / "summary.md").read_text()


def test_demo_summary_ends_with_the_measured_race(quick_race, tmp_path, monkeypatch):
    from kfac_ref.cli import main

    out, doc = quick_race
    monkeypatch.setattr(race, "MEASURED", tmp_path / "measured")
    assert "No measured race of digits-convnet" in race.measured_note("digits-convnet")
    (tmp_path / "measured").mkdir()
    (tmp_path / "measured" / "race-digits-convnet.json").write_text((out / "race-tables.json").read_text())
    assert main(["demo", "--quick", "--quiet", "--optimizers", "sgd", "--out", str(tmp_path / "demo")]) == 0
    summary = (tmp_path / "demo" / "summary.md").read_text()
    tables = race.format_race(doc).split("\n", 2)[2]
    assert summary.endswith(tables) and f"`kfac-ref race digits-convnet` ({doc['date']}, " in summary


def _met(record, t):
    v = record.get(t["metric"])
    return v is not None and (v <= t["value"] if t["op"] == "<=" else v >= t["value"])


def test_the_seeds_change_the_run_and_the_same_seed_repeats_it(quick_race):
    _, doc = quick_race
    trials = doc["methods"]["sgd"]["trials"]
    by_seed = {}
    for t in trials:
        by_seed.setdefault((t["seed"], json.dumps(t["settings"], sort_keys=True)), []).append(t)
    losses = {k: [r["train_loss"] for r in v[0]["records"]] for k, v in by_seed.items()}
    assert len({tuple(v) for v in losses.values()}) == len(losses)  # every (seed, settings) differs
    cfg = race.workload_config("digits-convnet", seed=5, is_quick=True)
    data = race.load_data(cfg)
    again = race.train(cfg, "sgd", trials[0]["settings"], data, 5)
    assert [r["train_loss"] for r in again["records"]] == [r["train_loss"] for r in trials[0]["records"]]


def test_race_command_line_refuses_bad_input_in_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "kfac_ref", "race", *args], capture_output=True, text=True)

    r = run("fashion-convnet", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "needs --data-dir" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("imagenet")
    assert r.returncode != 0 and "invalid choice" in r.stderr
    r = run("digits-convnet", "--methods", "sgd,ngd", "--out", str(tmp_path / "y"))
    assert r.returncode != 0 and "no search space for 'ngd'" in r.stderr
    r = run("digits-convnet", "--set", "kfac.damping=0.5", "--out", str(tmp_path / "y"))
    assert r.returncode != 0 and "--set kfac.damping: the race searches it" in r.stderr
    r = run("digits-convnet", "--methods", "sgd", "--set", "kfac.rescale=false", "--out", str(tmp_path / "y"))
    assert r.returncode != 0 and "kfac is not among the race's methods" in r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_every_registered_optimizer_has_its_own_colour_and_label():
    """The figures tell the methods apart: no method falls back to matplotlib's colour cycle."""
    from kfac_ref.experiments.curves import COLORS, LABELS
    from kfac_ref.optim import OPTIMIZERS

    assert set(OPTIMIZERS) <= set(COLORS) and set(OPTIMIZERS) <= set(LABELS)
    assert len({COLORS[n] for n in OPTIMIZERS}) == len(OPTIMIZERS)


def test_cifar_race_runs_on_a_synthetic_cifar10_folder(tmp_path, monkeypatch):
    """The cifar-convnet set-up on a stand-in in the official python-pickle layout (cifar-10-batches-py):
    32 random 32×32×3 images in each of the 5 training batch files and in test_batch."""
    import numpy as np

    from kfac_ref.experiments import compare
    from tests.test_data_cifar import write_cifar

    n = 32  # 160 training images: one quick batch of 128 fits
    write_cifar(tmp_path / "cifar", np.random.default_rng(3), "python", n=n)
    seen = []
    real_build = compare.build_model

    def recording_build(cfg, data):  # every model the race trains is built here (tuning and re-runs)
        model = real_build(cfg, data)
        seen.append((data.input_shape, data.num_classes, data.n_train, data.n_val, model.num_params))
        return model

    monkeypatch.setattr(compare, "build_model", recording_build)
    monkeypatch.setattr(race, "build_model", recording_build)
    out = tmp_path / "out"
    race.run_race("cifar-convnet", out, data_dir=str(tmp_path / "cifar"), is_quick=True, trials=1, seeds=1,
                  log=lambda *a: None)  # fmt: skip
    doc = json.loads((out / "race.json").read_text())
    w = race.WORKLOADS["cifar-convnet"]
    assert doc["workload"] == "cifar-convnet" and doc["tuning_seed"] == 0 and doc["seeds"] == [1]
    assert doc["targets"] == [{"name": t.name, "metric": t.metric, "op": t.op, "value": t.value} for t in w.targets]
    assert doc["config"]["dataset"] == "cifar10" and doc["config"]["data_dir"] == str(tmp_path / "cifar")
    assert set(doc["methods"]) == set(race.DEFAULT_METHODS)
    for res in doc["methods"].values():
        assert res["tuned"] == 1 and set(res["picks"]) == {t.name for t in w.targets}
        for trial in res["trials"]:
            assert trial["records"][-1]["iteration"] == race.QUICK_BOUNDS["iterations"]
            for r in trial["records"]:  # validated on the 24 test_batch images: k / 24
                assert r["val_acc"] is None or abs(r["val_acc"] * n - round(r["val_acc"] * n)) < 1e-9
    assert all((out / f).stat().st_size > 0 for f in ("summary.md", "race.png", "race.svg"))
    # 3×32×32 inputs and 10 classes; P by hand for the quick ConvNet (channels 4, 8; fc 16), two 2×2
    # pools taking 32×32 to 8×8: conv 3→4, conv 4→8, fc 8·8·8 → 16, fc 16 → 10 (weights + biases)
    p = (3 * 4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * 8 * 8 * 16 + 16) + (16 * 10 + 10)
    assert set(seen) == {((3, 32, 32), 10, 5 * n, n, p)}
    assert len(seen) >= sum(len(res["trials"]) for res in doc["methods"].values())  # one model per run at least
