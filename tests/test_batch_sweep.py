"""`kfac-ref batch-sweep`: the picks against the recorded runs, the tuning budget, and bad input.

The references are brute-force scans of the records every configuration kept (per target the
first measured record past it, and the configuration whose first is earliest) and compare's own
grid search; the end-to-end test runs the command with --quick (256 samples, a small ConvNet,
8 iterations, batch sizes 32 and full) and recomputes every pick from the saved batch_sweep.json.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from kfac_ref.backend import to_numpy
from kfac_ref.cli import main
from kfac_ref.experiments import batch_sweep as bs
from kfac_ref.experiments import compare
from kfac_ref.experiments.race import Target
from kfac_ref.params import get_flat_params

PNG = b"\x89PNG\r\n\x1a\n"
# Targets the quick runs reach for some methods and not for others (both branches of the table).
QUICK_TARGETS = (Target("train loss ≤ 1.9", "train_loss", "<=", 1.9), Target("val acc ≥ 0.3", "val_acc", ">=", 0.3))
QUICK_ARGS = ["--quick", "--quiet", "--target-loss", "1.9", "--target-acc", "0.3"]


def quick_config():
    """What `batch-sweep --quick` trains (kfac_ref.experiments.batch_sweep.run), in the command line's dtype."""
    return compare.CompareConfig(
        dtype=compare.CLI_DTYPE,
        optimizers=bs.DEFAULT_OPTIMIZERS,
        iterations=8,
        hidden=(16,),
        channels=(4, 8),
        eval_every=4,
        iteration_caps=dict(bs.ITERATION_CAPS),
        max_train=256,
    )


@pytest.fixture(scope="module")
def api_sweep():
    cfg = bs.sweep_config(quick_config())
    data = compare.load_data(cfg)
    model = compare.build_model(cfg, data)
    with threadpool_limits(limits=1, user_api="blas"):  # as the command runs
        points, skipped = bs.sweep(cfg, (32, None), data)
    return cfg, data, model, points, skipped


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch-sweep")
    code = main(["batch-sweep", *QUICK_ARGS, "--out", str(out)])
    return code, out


def first_reached(records, metric, op, value):
    """Brute force: the first record that measured ``metric`` and met the target → (iteration, seconds)."""
    for r in records:
        v = r[metric]
        if v is None or not math.isfinite(v):
            continue
        if (v <= value) if op == "<=" else (v >= value):
            return r["iteration"], r["seconds"]
    return None, None


def brute_force_pick(trials, target: dict):
    """The trial whose first hit is earliest: fewest iterations, then fewest seconds, then the earlier
    trial → (index or None, iterations, seconds)."""
    best = (None, None, None)
    for i, trial in enumerate(trials):
        it, sec = first_reached(trial["records"], target["metric"], target["op"], target["value"])
        if it is not None and (best[0] is None or (it, sec) < (best[1], best[2])):
            best = (i, it, sec)
    return best


def assert_picks_recomputed(doc) -> int:
    """Every pick of a document against :func:`brute_force_pick` on its own trials; returns how many reached."""
    reached = 0
    for point in doc["points"]:
        assert set(point["picks"]) == {t["name"] for t in doc["targets"]}
        for t in doc["targets"]:
            i, it, sec = brute_force_pick(point["trials"], t)
            p = point["picks"][t["name"]]
            assert (p["trial"], p["iterations"], p["seconds"]) == (i, it, sec)
            assert p["settings"] == (None if i is None else point["trials"][i]["settings"])
            reached += i is not None
    return reached


def test_the_picks_equal_a_brute_force_scan_of_the_recorded_runs(api_sweep):
    cfg, data, model, points, skipped = api_sweep
    doc = bs.sweep_document(cfg, points, skipped, QUICK_TARGETS, data.n_train, model.num_params)
    assert len(doc["points"]) == len(points)
    for got, point in zip(doc["points"], points):
        assert (got["batch_size"], got["optimizer"]) == (point["batch_size"], point["optimizer"])
        assert [t["settings"] for t in got["trials"]] == [t["settings"] for t in point["trials"]]
        per_it = sorted(t["records"][-1]["seconds"] / t["records"][-1]["iteration"] for t in point["trials"])
        assert got["seconds_per_iteration"] == per_it[len(per_it) // 2]  # three trials: the middle one
    reached = assert_picks_recomputed(doc)
    assert 0 < reached < 2 * len(points)  # both "reached" and "not reached" are exercised
    for got, point in zip(doc["points"], points):  # the saved (measured) records pick as all the records do
        for t in doc["targets"]:
            assert brute_force_pick(point["trials"], t)[0] == got["picks"][t["name"]]["trial"]
    text = bs.format_table(doc)
    assert f"| full ({data.n_train}) | kfac |" in text and "| 32 | sgd |" in text and "—" in text
    assert "not reached | — | none of its 3" in text


def test_every_method_gets_exactly_its_grid_at_every_batch_size(api_sweep):
    cfg, data, model, points, skipped = api_sweep
    expected = [
        (b, n)
        for b in (32, data.n_train)
        for n in cfg.optimizers
        if n != "ngd" or data.num_classes * b < model.num_params
    ]  # C·B < P for NGD
    assert [(p["batch_size"], p["optimizer"]) for p in points] == expected
    assert [(s["batch_size"], s["optimizer"]) for s in skipped] == [(data.n_train, "ngd")]
    for p in points:
        grid = compare.GRIDS[p["optimizer"]]
        assert len(p["trials"]) == len(grid)
        for run, setting in zip(p["trials"], grid):
            assert {k: run["settings"][k] for k in setting} == setting
            assert run["records"][-1]["iteration"] == compare.iterations_for(cfg, p["optimizer"])
        # the same θ₀ and the same first mini-batch for every configuration
        assert len({(r["records"][0]["train_loss"], r["records"][1]["batch_loss"]) for r in p["trials"]}) == 1
    assert all(p["trials"][0]["settings"]["solver"] == "woodbury" for p in points if p["optimizer"] == "ngd")


def test_the_trials_are_compares_grid_search_and_the_rule_is_the_races(api_sweep):
    cfg, data, model, points, _ = api_sweep
    # compare's grid search, run on its own, trains the same configurations to the same losses
    theta0 = to_numpy(get_flat_params(model))
    p = next(p for p in points if p["optimizer"] == "kfac" and p["batch_size"] == 32)
    _, trials = compare.grid_search(replace(cfg, batch_size=32), "kfac", data, theta0)
    assert [t["settings"] for t in trials] == [t["settings"] for t in p["trials"]]
    for t, mine in zip(trials, p["trials"]):
        assert [r["train_loss"] for r in t["run"]["records"]] == [r["train_loss"] for r in mine["records"]]

    # the rule is fewest iterations first, not the last validation loss (compare --grid's rule): on
    # made-up trials where the two disagree, and where a tie in iterations goes to fewer seconds
    def trial(points_):
        keys = ("iteration", "seconds", "train_loss", "val_loss")
        return {"settings": {}, "stopped": None, "records": [dict(zip(keys, p), val_acc=None) for p in points_]}

    slow_but_low = trial([(0, 0.0, 2.0, 2.0), (10, 1.0, 1.5, 1.0), (20, 2.0, 0.5, 0.1)])
    fast_but_high = trial([(0, 0.0, 2.0, 2.0), (10, 1.2, 0.5, 3.0), (20, 2.4, 0.4, 3.0)])
    fast_and_quicker = trial([(0, 0.0, 2.0, 2.0), (10, 0.9, 0.5, 3.0), (20, 1.8, 0.4, 3.0)])
    target = Target("train loss ≤ 1", "train_loss", "<=", 1.0)
    point = {"trials": [slow_but_low, fast_but_high, fast_and_quicker]}
    assert compare.grid_score(slow_but_low) < compare.grid_score(fast_but_high)
    assert bs.point_picks(point, [target])[target.name] == {
        "trial": 2,
        "settings": {},
        "iterations": 10,
        "seconds": 0.9,
    }
    assert bs.point_picks({"trials": point["trials"][:2]}, [target])[target.name]["trial"] == 1


def test_cli_quick_writes_the_three_files_with_the_documented_schema(cli_run, api_sweep):
    code, out = cli_run
    assert code == 0
    assert sorted(f.name for f in out.iterdir()) == sorted([bs.FIGURE, bs.JSON, bs.TABLE])
    assert (out / bs.FIGURE).read_bytes()[:8] == PNG
    doc = json.loads((out / bs.JSON).read_text())
    assert set(bs.DOCUMENT_KEYS) | {"seed", "targets_chosen", "n_train", "skipped"} <= set(doc)
    assert doc["command"].startswith("kfac-ref batch-sweep --quick") and doc["iterations"] == 8
    assert doc["targets"] == [{"name": t.name, "metric": t.metric, "op": t.op, "value": t.value} for t in QUICK_TARGETS]
    assert doc["targets_chosen"] == bs.GIVEN_TARGETS and doc["rule"] == bs.PICK_RULE
    assert doc["machine"]["device"] == "cpu" and doc["seed"] == 0
    assert doc["grids"]["kfac"] == {"damping": [g["damping"] for g in compare.GRIDS["kfac"]]}
    for point in doc["points"]:
        assert set(point) == {"batch_size", "optimizer", "trials", "picks", "seconds_per_iteration"}
        assert len(point["trials"]) == len(compare.GRIDS[point["optimizer"]])
        for trial in point["trials"]:
            assert set(trial) == {"settings", "records", "stopped"}
            assert {"iteration", "seconds", "train_loss", "val_loss", "val_acc"} <= set(trial["records"][0])
            assert [r["iteration"] for r in trial["records"]] == list(range(0, 9, 4))  # measured: every 4, the last
            assert all(r["train_loss"] is not None for r in trial["records"])
        for p in point["picks"].values():
            assert set(p) == {"trial", "settings", "iterations", "seconds"}
    assert bs.load_document(out / bs.JSON) == doc
    # same seed → the same runs: the command's picks and losses equal the API's
    cfg, data, model, points, skipped = api_sweep
    ref = bs.sweep_document(cfg, points, skipped, QUICK_TARGETS, data.n_train, model.num_params)

    # (ties in iterations go to fewer seconds, which vary between runs: the tied picks may differ)
    for mine, theirs in zip(doc["points"], ref["points"]):
        assert (mine["batch_size"], mine["optimizer"]) == (theirs["batch_size"], theirs["optimizer"])
        for t in QUICK_TARGETS:
            a, b = mine["picks"][t.name], theirs["picks"][t.name]
            assert a["iterations"] == b["iterations"]
            hits = [first_reached(x["records"], t.metric, t.op, t.value)[0] for x in theirs["trials"]]
            if a["iterations"] is not None and hits.count(a["iterations"]) == 1:
                assert a["trial"] == b["trial"] and a["settings"] == b["settings"]
            else:
                assert (a["trial"] is None) == (b["trial"] is None)

    def values(d, key):  # every record of every trial; None (not measured) as NaN
        return [np.nan if r[key] is None else r[key] for p in d["points"] for t in p["trials"] for r in t["records"]]

    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose(values(doc, key), values(ref, key), rtol=1e-12)
    table = (out / bs.TABLE).read_text()
    assert "train loss ≤ 1.9" in table and "val acc ≥ 0.3" in table and "full (256)" in table
    assert bs.PICK_RULE in table and bs.GIVEN_TARGETS in table


def test_every_pick_is_recomputed_from_the_saved_trials(cli_run):
    """Brute force from batch_sweep.json alone: per point and target, the trial reaching it first."""
    _, out = cli_run
    doc = json.loads((out / bs.JSON).read_text())
    reached = assert_picks_recomputed(doc)
    assert 0 < reached < len(doc["targets"]) * len(doc["points"])


def test_the_figure_draws_each_pick_once_per_target_and_panel(api_sweep):
    from matplotlib.figure import Figure

    cfg, data, model, points, skipped = api_sweep
    doc = bs.sweep_document(cfg, points, skipped, QUICK_TARGETS, data.n_train, model.num_params)
    ax_it, ax_sec = Figure().subplots(1, 2)
    bs.draw_batch_sweep(ax_it, ax_sec, doc)
    sizes = [32, data.n_train]
    for ax, field in ((ax_it, "iterations"), (ax_sec, "seconds")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert len(lines) == 2 * len(cfg.optimizers)
        for name in cfg.optimizers:
            for what in ("train loss ≤ 1.9", "val acc ≥ 0.3"):
                [label] = [
                    k
                    for k in lines
                    if k.endswith(what) and k.startswith({"sgd": "SGD", "ngd": "NGD", "kfac": "K-FAC"}[name])
                ]
                picks = {p["batch_size"]: p["picks"][what][field] for p in doc["points"] if p["optimizer"] == name}
                want = [np.nan if picks.get(b) is None else picks[b] for b in sizes]
                np.testing.assert_array_equal(lines[label].get_xdata(), sizes)
                np.testing.assert_array_equal(lines[label].get_ydata(), want)


@pytest.mark.parametrize(
    "sizes,message",
    [
        ([0], "batch size 0: expected a positive integer or 'full'"),
        ([300], "batch size 300: larger than the 256 training samples"),
        ([32, 64, 32], "batch size 32 appears twice"),
        ([256, None], "batch size 256 appears twice"),  # 'full' is the whole training set
        ([], "none given"),
    ],
)
def test_bad_batch_sizes_are_refused(sizes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bs.resolve_batch_sizes(sizes, 256)


def _no_training(*args, **kwargs):
    raise AssertionError("trained before refusing bad input")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-sizes", "0"], "expected positive integers or 'full', comma-separated, got '0'"),
        (["--batch-sizes=-8,32"], "got '-8'"),
        (["--batch-sizes", "32,32"], "batch size '32' appears twice"),
        (["--optimizers", "sgd,adagrad"], "unknown optimizer 'adagrad'"),
    ],
)
def test_bad_arguments_exit_with_one_clear_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "run_one", _no_training)
    with pytest.raises(SystemExit) as exc:
        main(["batch-sweep", "--quick", "--quiet", "--out", str(tmp_path / "out"), *args])
    assert exc.value.code != 0 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-sizes", "32,300"], "batch size 300: larger than the 256 training samples"),
        (["--batch-sizes", "256,full"], "batch size 256 appears twice"),
        (["--out", "FILE"], "exists and is not a folder"),
        (["--optimizers", "sgd,sgd"], "at most once"),
    ],
)
def test_bad_input_is_refused_before_any_training(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "run_one", _no_training)
    (tmp_path / "FILE").write_text("not a folder")
    out = tmp_path / "out"
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    assert main(["batch-sweep", "--quick", "--quiet", "--out", str(out), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kfac-ref batch-sweep: error:") and message in err[0]
    assert not out.exists() and (tmp_path / "FILE").read_text() == "not a folder"


@pytest.mark.parametrize(
    "targets,message",
    [
        ((Target("l", "train_loss", "<=", 0.0), Target("a", "val_acc", ">=", 0.9)), "training-loss target 0.0"),
        ((Target("l", "train_loss", "<=", 0.1), Target("a", "val_acc", ">=", 1.5)), "validation-accuracy target 1.5"),
        ((Target("f1", "val_f1", ">=", 0.5),), "unknown metric 'val_f1'"),
        ((Target("l", "train_loss", ">=", 0.1),), "op '>=', expected <="),
        ((Target("x", "train_loss", "<=", 0.1), Target("x", "val_acc", ">=", 0.9)), "each must be distinct"),
        ((), "0 given, expected 1 to 4"),
        (({"train_loss": 0.1},), "expected a race.Target"),
    ],
)
def test_bad_targets_are_refused(targets, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        bs.check_sweep(quick_config(), targets)


def test_the_default_targets_are_fixed_in_the_definition():
    assert [(t.metric, t.op, t.value) for t in bs.DEFAULT_TARGETS] == [
        ("train_loss", "<=", 0.05),
        ("val_acc", ">=", 0.95),
    ]
    assert bs.sweep_targets(0.05, 0.95) == bs.DEFAULT_TARGETS  # what the command line gives by default
    bs.check_targets(bs.DEFAULT_TARGETS)


# ---- reading the document back (notebook 05) ------------------------------------------------
def _records(first_hit):
    """Five records every 10 iterations, 0.01 s each; the targets (loss ≤ 0.3, acc ≥ 0.9) are met
    from iteration ``first_hit`` on (None: never)."""
    met = lambda i: first_hit is not None and i >= first_hit  # noqa: E731
    return [
        {"iteration": i, "seconds": i * 0.01, "train_loss": 0.2 if met(i) else 1.0, "val_acc": 0.95 if met(i) else 0.5}
        for i in (0, 10, 20, 30, 40)
    ]


def _fake_sweep():
    targets = [
        {"name": "train loss ≤ 0.3", "metric": "train_loss", "op": "<=", "value": 0.3},
        {"name": "val acc ≥ 0.9", "metric": "val_acc", "op": ">=", "value": 0.9},
    ]
    points = []
    for b, hits in {128: {"sgd": (40, 30), "kfac": (20, None)}, 1438: {"sgd": (None, None), "kfac": (10, 20)}}.items():
        for name, firsts in hits.items():
            trials = [
                {"settings": {"lr": lr}, "records": _records(f), "stopped": None} for lr, f in zip((0.1, 1.0), firsts)
            ]
            points.append({"batch_size": b, "optimizer": name, "trials": trials, "seconds_per_iteration": 0.01})
    doc = {
        "command": "kfac-ref batch-sweep",
        "date": "2026-12-01",
        "machine": {},
        "model": "convnet",
        "iterations": 40,
        "targets": targets,
        "rule": bs.PICK_RULE,
        "grids": {"sgd": {"lr": [0.1, 1.0]}, "kfac": {"lr": [0.1, 1.0]}},
        "points": points,
    }
    for p in points:
        p["picks"] = bs.point_picks(p, [Target(**t) for t in targets])
    return doc


def test_the_document_reads_back_with_ratios_and_a_table(tmp_path):
    assert bs.load_document(tmp_path / "absent.json") is None
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(_fake_sweep()))
    doc = bs.load_document(path)
    assert_picks_recomputed(doc)
    ratios = bs.ratios(doc)
    first = [r for r in ratios if r["batch_size"] == 128 and r["target"] == "train loss ≤ 0.3"][0]
    # SGD's pick for the loss is its lr 1 (30 iterations, before lr 0.1's 40); K-FAC's its lr 0.1 (20)
    assert first["iterations_ratio"] == 30 / 20 and first["seconds_ratio"] == pytest.approx(0.3 / 0.2)
    full = [r for r in ratios if r["batch_size"] == 1438 and r["target"] == "val acc ≥ 0.9"][0]
    assert full["iterations_ratio"] is None and full["method_reached"] and not full["base_reached"]
    table = bs.points_markdown(doc, n_train=1438)
    assert "| full (1438) | sgd | not reached | — | none of its 2 | not reached | — | none of its 2 |" in table
    assert "| 128 | kfac | 20 | 0.20 | lr 0.1 | 20 | 0.20 | lr 0.1 |" in table
    assert "| 128 | sgd | 30 | 0.30 | lr 1 |" in table
    assert table.count("\n") == 2 + 4
    doc["n_train"] = 128  # the sweep's own record of the training-set size is the default
    doc["points"][0]["seconds_per_iteration"] = None  # a value the sweep could not measure
    table = bs.points_markdown(doc)
    assert "| full (128) | kfac | 20 | 0.20 | lr 0.1 |" in table and "| 1438 | kfac | 10 |" in table
    assert "| — | 2 |" in table and "| 10.0 | 2 |" in table


def test_reading_a_document_names_what_is_missing(tmp_path):
    bad = _fake_sweep()
    del bad["targets"]
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"a.json: not a batch-sweep file, missing \['targets'\]"):
        bs.load_document(tmp_path / "a.json")
    bad = _fake_sweep()
    del bad["points"][1]["picks"]
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"points\[1\] lacks \['picks'\]"):
        bs.load_document(tmp_path / "b.json")
    bad = _fake_sweep()
    del bad["points"][2]["picks"]["val acc ≥ 0.9"]["seconds"]
    (tmp_path / "c.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"points\[2\] has no complete pick for target 'val acc ≥ 0.9'"):
        bs.load_document(tmp_path / "c.json")
    old = {k: v for k, v in _fake_sweep().items() if k != "points"} | {"rows": []}  # the format before the trials
    (tmp_path / "d.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"missing \['points'\].*older format without the trials"):
        bs.load_document(tmp_path / "d.json")
