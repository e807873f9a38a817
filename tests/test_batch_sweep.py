"""`kfac-ref batch-sweep`: the table against the recorded runs, the tuning budget, and bad input.

The references are brute-force scans of the records every run kept (the first
measured record past a target, the last validation loss of each configuration)
and compare's own grid search; the end-to-end test runs the command with
--quick (256 samples, a small ConvNet, 8 iterations, batch sizes 32 and full).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from kfac_ref.backend import to_numpy
from kfac_ref.cli import main
from kfac_ref.experiments import batch_sweep as bs
from kfac_ref.experiments import compare
from kfac_ref.params import get_flat_params

PNG = b"\x89PNG\r\n\x1a\n"
# Targets the quick runs reach for some methods and not for others (both branches of the table).
QUICK_TARGETS = {"train_loss": 1.9, "val_acc": 0.3}
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


def first_reached(records, key, target):
    """Brute force: the first record that measured ``key`` and met the target → (iteration, seconds)."""
    for r in records:
        v = r[key]
        if v is None or not math.isfinite(v):
            continue
        if (v <= target) if key == "train_loss" else (v >= target):
            return r["iteration"], r["seconds"]
    return None, None


def test_the_table_equals_a_brute_force_scan_of_the_recorded_runs(api_sweep):
    cfg, data, model, points, skipped = api_sweep
    doc = bs.sweep_document(cfg, points, skipped, QUICK_TARGETS, data.n_train, model.num_params)
    assert len(doc["rows"]) == len(points)
    reached = 0
    for row, point in zip(doc["rows"], points):
        run = point["runs"][point["pick"]]
        assert (row["batch_size"], row["optimizer"], row["settings"]) == (
            point["batch_size"],
            point["optimizer"],
            run["settings"],
        )
        for key, target in QUICK_TARGETS.items():
            it, sec = first_reached(run["records"], key, target)
            assert (row[key]["iterations"], row[key]["seconds"]) == (it, sec)
            reached += it is not None
        last = run["records"][-1]
        assert row["seconds_per_iteration"] == last["seconds"] / last["iteration"]
        assert row["final_train_loss"] == last["train_loss"]  # the last iteration is always measured
        assert row["best_val_acc"] == max(r["val_acc"] for r in run["records"] if r["val_acc"] is not None)
    assert 0 < reached < 2 * len(points)  # both "reached" and "not reached" are exercised
    text = bs.format_table(doc)
    assert f"| full ({data.n_train}) | kfac |" in text and "| 32 | sgd |" in text and "—" in text


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
        assert len(p["runs"]) == len(grid)
        for run, setting in zip(p["runs"], grid):
            assert {k: run["settings"][k] for k in setting} == setting
            assert run["records"][-1]["iteration"] == compare.iterations_for(cfg, p["optimizer"])
        # the same θ₀ and the same first mini-batch for every configuration
        assert len({(r["records"][0]["train_loss"], r["records"][1]["batch_loss"]) for r in p["runs"]}) == 1
    assert all(p["runs"][0]["settings"]["solver"] == "woodbury" for p in points if p["optimizer"] == "ngd")


def test_the_pick_is_the_grids_best_by_compares_rule(api_sweep):
    cfg, data, model, points, _ = api_sweep
    for p in points:
        scores = []
        for run in p["runs"]:
            val = [r["val_loss"] for r in run["records"] if r["val_loss"] is not None][-1]
            scores.append(val if run["stopped"] is None and math.isfinite(val) else math.inf)
        assert p["pick"] == scores.index(min(scores))
    # compare's grid search, run on its own, picks the same setting
    theta0 = to_numpy(get_flat_params(model))
    p = next(p for p in points if p["optimizer"] == "kfac" and p["batch_size"] == 32)
    best, _ = compare.grid_search(replace(cfg, batch_size=32), "kfac", data, theta0)
    assert best == p["runs"][p["pick"]]["settings"]


def test_cli_quick_writes_the_three_files_with_the_documented_schema(cli_run, api_sweep):
    code, out = cli_run
    assert code == 0
    assert sorted(f.name for f in out.iterdir()) == sorted([bs.FIGURE, bs.JSON, bs.TABLE])
    assert (out / bs.FIGURE).read_bytes()[:8] == PNG
    doc = json.loads((out / bs.JSON).read_text())
    assert {"command", "date", "machine", "model", "iterations", "targets", "grids", "rows"} <= set(doc)
    assert doc["command"].startswith("kfac-ref batch-sweep --quick") and doc["iterations"] == 8
    assert doc["targets"] == QUICK_TARGETS and doc["machine"]["device"] == "cpu"
    assert doc["grids"]["kfac"] == {"damping": [g["damping"] for g in compare.GRIDS["kfac"]]}
    for row in doc["rows"]:
        assert set(row) == {
            "batch_size",
            "optimizer",
            "settings",
            "runs_tried",
            "train_loss",
            "val_acc",
            "seconds_per_iteration",
            "final_train_loss",
            "best_val_acc",
        }
        assert row["runs_tried"] == len(compare.GRIDS[row["optimizer"]])
        for key in ("train_loss", "val_acc"):
            assert set(row[key]) == {"iterations", "seconds"}
    # same seed → the same runs: the command's iteration counts equal the API's
    cfg, data, model, points, skipped = api_sweep
    ref = bs.sweep_document(cfg, points, skipped, QUICK_TARGETS, data.n_train, model.num_params)
    assert [
        (r["batch_size"], r["optimizer"], r["settings"], r["train_loss"]["iterations"], r["val_acc"]["iterations"])
        for r in doc["rows"]
    ] == [
        (r["batch_size"], r["optimizer"], r["settings"], r["train_loss"]["iterations"], r["val_acc"]["iterations"])
        for r in ref["rows"]
    ]
    np.testing.assert_allclose(
        [r["final_train_loss"] for r in doc["rows"]], [r["final_train_loss"] for r in ref["rows"]], rtol=1e-12
    )
    table = (out / bs.TABLE).read_text()
    assert "train loss ≤ 1.9" in table and "val acc ≥ 0.3" in table and "full (256)" in table


def test_the_figure_draws_each_row_once_per_target_and_panel(api_sweep):
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
            for key, what in (("train_loss", "train loss ≤ 1.9"), ("val_acc", "val acc ≥ 0.3")):
                [label] = [
                    k
                    for k in lines
                    if k.endswith(what) and k.startswith({"sgd": "SGD", "ngd": "NGD", "kfac": "K-FAC"}[name])
                ]
                rows = {r["batch_size"]: r[key][field] for r in doc["rows"] if r["optimizer"] == name}
                want = [np.nan if rows.get(b) is None else rows[b] for b in sizes]
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
        ({"train_loss": 0.0, "val_acc": 0.9}, "training-loss target 0.0"),
        ({"train_loss": 0.1, "val_acc": 1.5}, "validation-accuracy target 1.5"),
        ({"train_loss": 0.1}, "exactly the keys"),
    ],
)
def test_bad_targets_are_refused(targets, message):
    with pytest.raises(ValueError, match=message):
        bs.check_sweep(quick_config(), targets)


# ---- reading the document back (notebook 05) ------------------------------------------------
def _fake_sweep():
    rows = []
    for b, (sgd_it, kfac_it) in {128: (40, 20), 1438: (None, 10)}.items():
        for name, it in (("sgd", sgd_it), ("kfac", kfac_it)):
            rows.append(
                {
                    "batch_size": b,
                    "optimizer": name,
                    "settings": {"lr": 1.0},
                    "runs_tried": 3,
                    "train_loss": {"iterations": it, "seconds": None if it is None else it * 0.01},
                    "val_acc": {"iterations": it, "seconds": None if it is None else it * 0.02},
                    "seconds_per_iteration": 0.01,
                    "final_train_loss": 0.2,
                    "best_val_acc": 0.9,
                }
            )
    return {
        "command": "kfac-ref batch-sweep",
        "date": "2026-12-01",
        "machine": {},
        "model": "convnet",
        "iterations": 100,
        "targets": {"train_loss": 0.3, "val_acc": 0.9},
        "grids": {},
        "rows": rows,
    }


def test_the_document_reads_back_with_ratios_and_a_table(tmp_path):
    assert bs.load_document(tmp_path / "absent.json") is None
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(_fake_sweep()))
    doc = bs.load_document(path)
    ratios = bs.ratios(doc)
    first = [r for r in ratios if r["batch_size"] == 128 and r["target"] == "train_loss"][0]
    assert first["iterations_ratio"] == 40 / 20 and first["seconds_ratio"] == pytest.approx(0.4 / 0.2)
    full = [r for r in ratios if r["batch_size"] == 1438 and r["target"] == "val_acc"][0]
    assert full["iterations_ratio"] is None and full["method_reached"] and not full["base_reached"]
    table = bs.points_markdown(doc, n_train=1438)
    assert "| full (1438) | sgd | not reached |" in table and "| 128 | kfac | 20 | 0.20 |" in table
    assert table.count("\n") == 2 + 4
    doc["n_train"] = 128  # the sweep's own record of the training-set size is the default
    doc["rows"][0]["final_train_loss"] = None  # a value the sweep could not measure
    table = bs.points_markdown(doc)
    assert "| full (128) | sgd | 40 | 0.40 |" in table and "| 1438 | kfac | 10 |" in table
    assert "| 10.0 | — | 0.900 | 3 |" in table


def test_reading_a_document_names_what_is_missing(tmp_path):
    bad = _fake_sweep()
    del bad["targets"]
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"a.json: not a batch-sweep file, missing \['targets'\]"):
        bs.load_document(tmp_path / "a.json")
    bad = _fake_sweep()
    del bad["rows"][1]["val_acc"]
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"rows\[1\] lacks \['val_acc'\]"):
        bs.load_document(tmp_path / "b.json")
