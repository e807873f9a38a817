"""The command line: `kfac-ref compare --quick`, `sizes`, and bad input."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from kfac_ref.cli import main
from kfac_ref.experiments.summary import (
    default_targets,
    format_ratio,
    format_summary,
    summarize,
    target_list,
    time_to_target,
)
from kfac_ref.train import RECORD_FIELDS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    code = main(["compare", "--quick", "--quiet", "--optimizers", "sgd,ngd,block-ngd,kfac", "--out", str(out)])
    return code, out


def test_compare_quick_writes_exactly_the_documented_outputs(quick_run):
    code, out = quick_run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["history.json", "curves.png", "curves.svg", "summary.md"]
        + [f"history_{o}.csv" for o in ("sgd", "ngd", "block-ngd", "kfac")]
    )
    doc = json.loads((out / "history.json").read_text())
    assert set(doc) == {"config", "machine", "runs"}
    assert [r["optimizer"] for r in doc["runs"]] == ["sgd", "ngd", "block-ngd", "kfac"]
    for run in doc["runs"]:
        assert set(run) == {"optimizer", "settings", "records"}
        assert run["records"][0]["iteration"] == 0
        for rec in run["records"]:
            assert list(rec) == list(RECORD_FIELDS)
        last = run["records"][-1]
        assert last["iteration"] == doc["config"]["iterations"] and last["train_loss"] is not None
        unmeasured = [
            r
            for r in run["records"]
            if r["iteration"] % doc["config"]["eval_every"] and r["iteration"] != last["iteration"]
        ]
        assert unmeasured and all(r["val_acc"] is None for r in unmeasured)
    assert (out / "curves.png").read_bytes()[:8] == PNG
    assert (out / "curves.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    with open(out / "history_kfac.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == RECORD_FIELDS and len(rows) == len(doc["runs"][3]["records"])
    summary = (out / "summary.md").read_text()
    assert "| iterations vs SGD |" in summary and f"Batch size {doc['config']['batch_size']}." in summary


def test_every_optimizer_starts_from_the_same_point_and_sees_the_same_data(quick_run):
    _, out = quick_run
    doc = json.loads((out / "history.json").read_text())
    starts = {(r["records"][0]["train_loss"], r["records"][0]["val_loss"]) for r in doc["runs"]}
    assert len(starts) == 1
    first_batch = {r["records"][1]["batch_loss"] for r in doc["runs"]}
    assert len(first_batch) == 1  # same θ₀ and same first mini-batch


def test_summary_counts_iterations_and_seconds_to_target():
    recs = [dict.fromkeys(RECORD_FIELDS) for _ in range(4)]
    for i, (loss, acc) in enumerate([(2.0, 0.1), (1.0, 0.5), (0.5, 0.8), (0.2, 0.9)]):
        recs[i].update(iteration=i * 10, seconds=i * 1.5, train_loss=loss, val_acc=acc)
    assert time_to_target(recs, "train_loss", 0.6) == (20, 3.0)
    assert time_to_target(recs, "val_acc", 0.95) == (None, None)
    fast = [dict(r, iteration=r["iteration"] // 5, seconds=r["seconds"] / 2) for r in recs]
    runs = [{"optimizer": "sgd", "records": recs}, {"optimizer": "kfac", "records": fast[:3]}]
    assert default_targets(runs) == {"train_loss": 0.5, "val_acc": 0.8}
    assert target_list(runs) == [
        ("train_loss", 0.5),  # the hardest both reach
        ("train_loss", 0.2),  # SGD's best
        ("train_loss", 0.1),
        ("train_loss", 0.01),
        ("val_acc", 0.8),
        ("val_acc", 0.9),  # SGD's best and a round target: once
        ("val_acc", 0.95),
    ]
    summary = summarize(runs, [("train_loss", 0.5), ("val_acc", 0.9)])
    rows = {(r["metric"], r["optimizer"]): r for r in summary["rows"]}
    assert rows["train_loss", "kfac"]["iterations"] == 4 and rows["train_loss", "sgd"]["iterations"] == 20
    assert rows["train_loss", "kfac"]["iterations_sgd_ratio"] == 5.0
    assert rows["train_loss", "kfac"]["seconds_sgd_ratio"] == 2.0
    assert rows["val_acc", "kfac"]["iterations"] is None and rows["val_acc", "sgd"]["iterations"] == 30
    assert "| train loss ≤ 0.5 | kfac | 4 | 5.0× fewer | 1.50 | 2.0× less time |" in format_summary(summary)


@pytest.mark.parametrize(
    "ratio,text",
    [(5.0, "5.0× fewer"), (1.0, "same"), (0.5, "2.0× more"), (1 / 86.2, "86× more"), (12.4, "12× fewer"), (None, "—")],
)
def test_summary_writes_slow_downs_as_slow_downs_never_as_zero(ratio, text):
    assert format_ratio(ratio, "fewer", "more") == text


def test_sizes_prints_the_three_alexnet_totals(capsys):
    assert main(["sizes", "--arch", "alexnet"]) == 0
    text = capsys.readouterr().out
    for total in ("62,378,344", "60,965,224", "61,100,840"):
        assert total in text


@pytest.mark.parametrize(
    "args,message",
    [
        (["compare", "--optimizers", "sgd,adagrad"], "unknown optimizer 'adagrad'"),
        (["compare", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["compare", "--iterations", "-5"], "expected a positive integer, got '-5'"),
        (["compare", "--batch-size", "0"], "expected a positive integer"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_clear_line(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(args + ["--out", str(tmp_path / "out")])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "mnist"], "--dataset mnist needs --data-dir"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent/folder"], "/nonexistent/folder"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
        (["--max-train", "20"], "batch_size must be ≤ the 20 training samples"),
        (["--lr", "kfac=-1"], "lr (η) must be > 0"),  # the optimizer's own check, before any training
        (["--set", "kfac.kl_clip=0.001"], "pass kl_clip=None with rescale=True"),
    ],
)
def test_runtime_errors_give_one_line_and_no_results(args, message, capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "--quiet", "--quick", "--out", str(out)] + args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kfac-ref compare: error:") and message in err[0]
    assert not out.exists() or not any(p.suffix in (".json", ".png", ".md") for p in out.iterdir())


def test_module_entry_point_and_help():
    res = subprocess.run(
        [sys.executable, "-m", "kfac_ref", "compare", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    for flag in (
        "--dataset",
        "--data-dir",
        "--model",
        "--optimizers",
        "--kind",
        "--iterations",
        "--epochs",
        "--batch-size",
        "--lr",
        "--damping",
        "--momentum",
        "--grid",
        "--device",
        "--dtype",
        "--seed",
        "--out",
        "--quick",
        "--quiet",
    ):
        assert flag in res.stdout


@pytest.mark.parametrize(
    "name", ["compare", "demo", "batch-sweep", "race", "sizes", "fisher-plot", "download", "reference", "audit"]
)
def test_every_sub_command_owns_its_parser_and_help(name, capsys):
    from kfac_ref.cli import COMMANDS

    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: kfac-ref {name}") and COMMANDS[name].help.split()[0] in text
    assert set(COMMANDS) == {
        "compare",
        "demo",
        "batch-sweep",
        "race",
        "sizes",
        "fisher-plot",
        "download",
        "reference",
        "audit",
    }


def test_sizes_errors_come_from_its_own_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sizes", "--arch", "vgg"])
    assert exc.value.code == 2 and "invalid choice: 'vgg'" in capsys.readouterr().err


def test_demo_is_compare_at_its_defaults_but_for_the_output_folder_and_ngds_cap():
    from dataclasses import asdict

    from kfac_ref.cli import build_parser
    from kfac_ref.experiments import compare
    from kfac_ref.experiments.compare import DEMO_NGD_ITERATIONS, config_from_args

    demo, comp = (build_parser().parse_args([name]) for name in ("demo", "compare"))
    d, c = asdict(config_from_args(demo)), asdict(config_from_args(comp))
    assert d.pop("iteration_caps") == {"ngd": DEMO_NGD_ITERATIONS, "block-ngd": DEMO_NGD_ITERATIONS}
    assert c.pop("iteration_caps") == dict(compare.ITERATION_CAPS)
    assert d == c and (demo.out, comp.out) == ("results/demo", "results/compare")


def test_outputs_name_the_dtype_and_what_the_training_figures_are_measured_on(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--quick", "--optimizers", "sgd", "--eval-train", "100", "--out", str(out)]) == 0
    doc = json.loads((out / "history.json").read_text())
    assert doc["config"]["eval_train"] == 100 and doc["config"]["dtype"] in ("float32", "float64")
    summary, said = (out / "summary.md").read_text(), capsys.readouterr().out
    for text in (summary, said):
        assert "a fixed subset of 100 of the 256 training samples (seed 0)" in text
    assert f"arithmetic in {doc['config']['dtype']}" in summary and doc["config"]["dtype"] in said


def test_the_summary_says_where_each_target_comes_from_and_each_methods_settings_and_finals():
    recs = [dict.fromkeys(RECORD_FIELDS) for _ in range(3)]
    for i, (loss, acc) in enumerate([(2.0, 0.1), (0.7, 0.6), (0.3, 0.85)]):
        recs[i].update(iteration=i * 5, seconds=i * 1.0, train_loss=loss, val_acc=acc)
    other = [dict(r, train_loss=r["train_loss"] * 2, val_acc=r["val_acc"] / 2) for r in recs]
    runs = [
        {"optimizer": "sgd", "settings": {"lr": 0.03, "nesterov": False}, "records": recs},
        {"optimizer": "kfac", "settings": {"damping": 0.1}, "records": other},
    ]
    text = format_summary(summarize(runs))
    assert "train loss ≤ 0.6 (the hardest every run reaches: kfac's best training loss)" in text  # 2 × 0.3
    assert "train loss ≤ 0.3 (SGD's best training loss)" in text and "train loss ≤ 0.1 (a round value)" in text
    assert "val acc ≥ 0.425 (the hardest every run reaches: kfac's best validation accuracy)" in text
    assert "| sgd | lr=0.03, nesterov=False | 10 | 0.3 | 0.8500 |" in text
    assert "| kfac | damping=0.1 | 10 | 0.6 | 0.4250 |" in text
    assert "timings are noisy" in text


@pytest.mark.parametrize(
    "name", ["compare", "demo", "batch-sweep", "race", "sizes", "fisher-plot", "download", "reference", "audit"]
)
def test_help_shows_each_default_once_and_no_markup(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: None)" not in text and not re.search(r"\(default:[^()]*\)\s*\(default:", text)
    for markup in ("``", ":func:", ":class:", "{func}", "`"):
        assert markup not in text, markup
    if name in ("compare", "demo", "batch-sweep"):
        assert "--model {mlp,convnet,autoencoder} convnet:" in text  # --model has its help


@pytest.mark.parametrize("command", ["compare", "batch-sweep"])
def test_a_misspelt_optimizer_gives_one_line_naming_the_closest(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--optimizers", "sgd,kfca"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "unknown optimizer 'kfca' (did you mean 'kfac'?)" in err[0] and "usage" not in err[0]


# --- no silent override: what the command line is told either counts or is refused ---------------
def _config(*argv):
    from kfac_ref.cli import build_parser
    from kfac_ref.experiments.compare import config_from_args

    return config_from_args(build_parser().parse_args(["compare", *argv]))


def test_explicit_flags_override_the_settings_file(tmp_path):
    f = tmp_path / "s.json"
    f.write_text('{"kfac": {"lr": 0.7, "damping": 0.2}, "sgd": {"lr": 0.05}}')
    cfg = _config("--optimizers", "sgd,kfac", "--settings", str(f), "--lr", "kfac=0.3", "--set", "sgd.lr=0.01")
    assert cfg.settings["kfac"] == {"lr": 0.3, "damping": 0.2}  # the flag wins, the file's other keys stay
    assert cfg.settings["sgd"] == {"lr": 0.01}  # --set wins too


@pytest.mark.parametrize("flag", [["--set", "ekfac.damping=0.1"], ["--damping", "ekfac=0.1"]])
def test_a_setting_for_an_optimizer_that_does_not_run_is_refused(flag, tmp_path, capsys):
    code = main(["compare", "--quick", "--optimizers", "sgd,kfac", *flag, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code != 0 and "ekfac is not among --optimizers (sgd,kfac)" in err and not (tmp_path / "x").exists()


def test_an_infinite_target_loss_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--quick", "--target-loss", "inf", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "a finite number > 0" in capsys.readouterr().err


def test_diagnostics_less_often_than_the_run_is_long_is_refused(tmp_path, capsys):
    code = main(["compare", "--quick", "--iterations", "6", "--diagnostics", "7", "--out", str(tmp_path / "x")])
    assert code != 0 and "no iteration would be measured" in capsys.readouterr().err


def test_diagnostics_of_adam_are_refused_before_training(tmp_path, capsys):
    out = tmp_path / "x"
    code = main(["compare", "--quick", "--optimizers", "sgd,adam", "--diagnostics", "2", "--out", str(out)])
    assert code != 0 and "adam's step is not a preconditioned gradient" in capsys.readouterr().err
    assert not out.exists()
