"""`kfac-ref compare --diagnostics K`: the recorded angles against a dense recomputation, the
iterations measured, the clock, off by default, and the CLI end to end."""

from __future__ import annotations

import copy
import csv
import json
import time
import types
from dataclasses import replace

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import fisher, nn, optim
from kfac_ref.cli import main
from kfac_ref.experiments import compare
from kfac_ref.experiments.curves import ANGLE_TITLE
from kfac_ref.fisher.kfac import wbar_block_to_param_order
from kfac_ref.params import flat_to_wbar, layer_slices, wbar_to_flat
from kfac_ref.train import RECORD_FIELDS, Trainer

FIELDS = ("angle_deg", "curvature_error", "natural_damping")


def _cfg(**kw):
    """A tiny digits MLP (P = 64·4 + 4 + 4·10 + 10 = 310) with exact K-FAC refreshed every step."""
    base = compare.CompareConfig(
        model="mlp",
        hidden=(4,),
        optimizers=("sgd", "kfac"),
        iterations=6,
        batch_size=16,
        eval_every=3,
        max_train=64,
        diagnostics_every=3,
        settings={"kfac": {"T_cov": 1, "T_inv": 1, "kind": "exact", "kl_clip": None}},
    )
    return replace(base, **kw)


def _run(cfg, name, iterations=None):
    data = compare.load_data(cfg)
    theta0 = K.get_flat_params(compare.build_model(cfg, data))
    return compare.run_one(cfg, name, compare.settings_for(cfg, name), data, theta0, iterations or cfg.iterations)


def _angle(u, v):
    return float(np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))


def _kfac_direction(model, factors, gamma, grad):
    """Brute force: per layer (G + √γ/π I) ⊗ (A + π√γ I) solved densely, π from the traces."""
    parts = []
    for layer, sl, (a, g) in zip(model.param_layers(), layer_slices(model), factors):
        pi = np.sqrt((np.trace(a) / a.shape[0]) / (np.trace(g) / g.shape[0]))
        block = np.kron(g + np.sqrt(gamma) / pi * np.eye(g.shape[0]), a + pi * np.sqrt(gamma) * np.eye(a.shape[0]))
        v = np.linalg.solve(block, flat_to_wbar(layer, grad[sl]).reshape(-1))
        parts.append(wbar_to_flat(layer, v.reshape(g.shape[0], a.shape[0])))
    return np.concatenate(parts)


@pytest.mark.parametrize("name", ["sgd", "kfac"])
def test_recorded_angle_equals_a_dense_recomputation_at_theta_before_the_step(name, monkeypatch):
    cfg = _cfg()
    seen = []  # what the hook measured: the step, its batch, θ before it and K-FAC's curvature then
    real = compare.diagnostics

    def spy(opt, x, y, theta, **kw):
        seen.append(
            (
                opt.steps,
                x.copy(),
                y.copy(),
                theta.copy(),
                copy.deepcopy(getattr(opt.curvature, "factors", None)),
                opt.direction_damping,
            )
        )
        return real(opt, x, y, theta=theta, **kw)

    monkeypatch.setattr(compare, "diagnostics", spy)
    run = _run(cfg, name)
    measured = {r["iteration"]: r for r in run["records"] if "angle_deg" in r}
    assert sorted(measured) == [s[0] for s in seen] == [3, 6]
    model, loss = compare.build_model(cfg, compare.load_data(cfg)), nn.CrossEntropyLoss()
    lam0 = compare.DEFAULT_SETTINGS["kfac"]["damping"]  # K-FAC's λ₀: SGD's natural damping
    for step, x, y, theta, factors, gamma in seen:
        # K-FAC's own γ is its damping at that step (LM moves it from λ₀; η_wd = 0)
        lam = lam0 if name == "sgd" else gamma
        K.set_flat_params(model, theta)
        grad = K.loss_and_grad(model, loss, x, y).grad
        f = fisher.dense(model, loss, x, y, "exact")
        natural = np.linalg.solve(f + lam * np.eye(len(grad)), grad)  # dense, not Woodbury
        rec = measured[step]
        assert rec["natural_damping"] == lam
        if name == "sgd":
            assert rec["curvature_error"] is None
            want = _angle(grad, natural)
        else:
            want = _angle(_kfac_direction(model, factors, lam, grad), natural)
            kfac = fisher.blocks_to_dense(
                model,
                [
                    wbar_block_to_param_order(layer, layer, np.kron(g, a))
                    for layer, (a, g) in zip(model.param_layers(), factors)
                ],
            )
            assert abs(rec["curvature_error"] - np.linalg.norm(kfac - f) / np.linalg.norm(f)) <= 1e-10
        assert abs(rec["angle_deg"] - want) <= 1e-6
        assert 1 < rec["angle_deg"] < 89  # neither NGD nor orthogonal to it: a test that can fail both ways


def test_records_are_measured_at_exactly_the_multiples_of_k_and_nowhere_else():
    run = _run(_cfg(diagnostics_every=3), "kfac", iterations=8)
    its = [r["iteration"] for r in run["records"]]
    assert its == list(range(9))
    for r in run["records"]:
        if r["iteration"] in (3, 6):
            assert set(FIELDS) <= set(r) and r["angle_deg"] >= 0 and r["curvature_error"] > 0
        else:
            assert list(r) == list(RECORD_FIELDS)
    assert all(list(r) == list(RECORD_FIELDS) for r in _run(_cfg(diagnostics_every=9), "sgd", 8)["records"])


def test_the_training_clock_excludes_the_diagnostics(monkeypatch):
    calls = []

    def slow(opt, x, y, theta, **kw):  # a deliberately slow diagnostics function
        calls.append(opt.steps)
        time.sleep(0.3)
        return {"angle_deg": 1.0, "curvature_error": None, "damping": 0.1}

    monkeypatch.setattr(compare, "diagnostics", slow)
    start = time.perf_counter()
    run = _run(_cfg(diagnostics_every=1), "sgd", iterations=4)
    assert calls == [1, 2, 3, 4] and time.perf_counter() - start >= 1.2  # the sleeps happened…
    assert run["records"][-1]["seconds"] < 0.3  # …and none of them is in the training time


def test_the_after_step_hook_is_checked():
    cfg = _cfg()
    data = compare.load_data(cfg)
    opt = optim.SGD(compare.build_model(cfg, data), nn.CrossEntropyLoss(), lr=0.1)
    with pytest.raises(TypeError, match="after_step must be a function"):
        Trainer(opt, data, 16, np.random.default_rng(0), after_step=3)
    trainer = Trainer(opt, data, 16, np.random.default_rng(0), after_step=lambda *a: {"seconds": 0.0})
    with pytest.raises(ValueError, match=r"after_step returned \['seconds'\]: fields the trainer records itself"):
        trainer.run(1)


@pytest.mark.parametrize(
    "k, exc, match",
    [
        (-1, ValueError, "diagnostics_every must be ≥ 0, got -1"),
        (2.5, ValueError, "diagnostics_every must be an integer, got 2.5"),
        ("3", TypeError, "diagnostics_every must be a number, got '3'"),
    ],
)
def test_a_bad_k_is_refused_before_any_work(k, exc, match, tmp_path):
    with pytest.raises(exc, match=match):
        compare.run_compare(_cfg(diagnostics_every=k), tmp_path / "out", log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def _fake_clock(monkeypatch):
    """Deterministic training seconds: each perf_counter() call of the Trainer advances by 1 ms."""
    ticks = iter(range(10**6))
    monkeypatch.setattr("kfac_ref.train.time", types.SimpleNamespace(perf_counter=lambda: next(ticks) * 1e-3))


def test_off_by_default_leaves_the_history_unchanged(monkeypatch, tmp_path):
    assert compare.CompareConfig().diagnostics_every == 0
    figures = []
    real_figure = compare.curves_figure
    monkeypatch.setattr(compare, "curves_figure", lambda *a: figures.append(real_figure(*a)) or figures[-1])
    monkeypatch.setattr(compare, "save_figure", lambda fig, path: path.write_bytes(b""))  # (the CLI test draws)
    quiet = {"log": lambda *a: None}
    _fake_clock(monkeypatch)
    compare.run_compare(_cfg(diagnostics_every=0), tmp_path / "off", **quiet)
    _fake_clock(monkeypatch)
    compare.run_compare(_cfg(diagnostics_every=2), tmp_path / "on", **quiet)
    off_text = (tmp_path / "off" / "history.json").read_text()
    off, on = json.loads(off_text), json.loads((tmp_path / "on" / "history.json").read_text())
    for run in off["runs"]:
        assert all(list(r) == list(RECORD_FIELDS) for r in run["records"])
    assert sum("angle_deg" in r for run in on["runs"] for r in run["records"]) == 2 * 3  # iterations 2, 4, 6
    # the run with diagnostics, less what they added, is the run without them, byte for byte:
    # the measurement leaves θ, the optimizer state, the random generator and the clock alone
    for run in on["runs"]:
        for r in run["records"]:
            for f in FIELDS:
                r.pop(f, None)
    on["config"]["diagnostics_every"] = 0
    assert json.dumps(on, indent=1, allow_nan=False) == off_text
    with open(tmp_path / "off" / "history_kfac.csv") as f:
        assert tuple(next(csv.reader(f))) == RECORD_FIELDS
    with open(tmp_path / "on" / "history_kfac.csv") as f:
        assert tuple(next(csv.reader(f))) == RECORD_FIELDS + FIELDS
    assert "Angle" not in (tmp_path / "off" / "summary.md").read_text()
    assert len(figures[0].axes) == 4 and len(figures[1].axes) == 5


def test_cli_end_to_end_writes_the_fields_the_panel_and_the_summary_line(monkeypatch, tmp_path):
    figures = []
    real_figure = compare.curves_figure
    monkeypatch.setattr(compare, "curves_figure", lambda *a: figures.append(real_figure(*a)) or figures[-1])
    out = tmp_path / "run"
    code = main(
        [
            "compare",
            "--quick",
            "--quiet",
            "--model",
            "mlp",
            "--hidden",
            "4",
            "--optimizers",
            "sgd,kfac,ekfac",
            "--iterations",
            "6",
            "--diagnostics",
            "3",
            "--set",
            "kfac.adapt_damping=False",  # λ stays λ₀ here; the test above follows an adapting λ
            "--out",
            str(out),
        ]
    )
    assert code == 0
    doc = json.loads((out / "history.json").read_text())
    assert doc["config"]["diagnostics_every"] == 3
    lam = compare.DEFAULT_SETTINGS["kfac"]["damping"]
    for run in doc["runs"]:
        got = {r["iteration"]: r for r in run["records"] if "angle_deg" in r}
        assert sorted(got) == [3, 6]
        own = lam if run["optimizer"] == "sgd" else compare.DEFAULT_SETTINGS[run["optimizer"]]["damping"]
        for r in got.values():
            assert 0 <= r["angle_deg"] <= 180 and r["natural_damping"] == own
            assert (r["curvature_error"] is None) == (run["optimizer"] == "sgd")
    (fig,) = figures
    assert len(fig.axes) == 5
    (panel,) = [ax for ax in fig.axes if ax.get_title() == ANGLE_TITLE]
    assert len(panel.get_lines()) == 3 and [len(line.get_xdata()) for line in panel.get_lines()] == [2, 2, 2]
    summary = (out / "summary.md").read_text()
    assert f"SGD's is K-FAC's λ = {lam:g}" in summary
    for name in ("sgd", "kfac", "ekfac"):
        assert f"- {name}: angle " in summary


@pytest.mark.parametrize("value", ["-1", "2.5", "ten"])
def test_cli_refuses_a_bad_k(value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--quick", "--quiet", "--diagnostics", value, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert f"argument --diagnostics: expected an integer ≥ 0 (0: off), got '{value}'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_refuses_diagnostics_with_distributed(capsys, tmp_path):
    code = main(["compare", "--quick", "--quiet", "--diagnostics", "2", "--distributed", "--out", str(tmp_path / "x")])
    assert code == 1
    assert "--diagnostics is not available with --distributed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_diagnostics_on_each_backend_record_plain_floats(device):
    run = _run(_cfg(device=device, diagnostics_every=2), "kfac", iterations=2)
    rec = run["records"][-1]
    assert all(type(rec[f]) is float for f in FIELDS)
    json.dumps(compare.jsonable(run["records"]), allow_nan=False)


def test_cli_hyper_parameters_reach_the_optimizers_that_pass_them_on():
    """EKFAC and KFACTridiag take K-FAC's hyper-parameters through **kwargs: --damping and --set reach them."""
    from kfac_ref.cli import build_parser
    from kfac_ref.experiments.arguments import hyper_types
    from kfac_ref.experiments.compare import config_from_args

    assert {"damping", "T_inv", "kl_clip"} <= set(hyper_types("kfac-tridiag"))
    assert {"damping", "T_scale"} <= set(hyper_types("ekfac")) and "kwargs" not in hyper_types("ekfac")
    args = build_parser().parse_args(
        [
            "compare",
            "--optimizers",
            "sgd,kfac-tridiag,ekfac",
            "--damping",
            "0.1",
            "--set",
            "ekfac.T_scale=3",
            "--set",
            "kfac-tridiag.kl_clip=none",
        ]
    )
    assert config_from_args(args).settings == {
        "kfac-tridiag": {"damping": 0.1, "kl_clip": None},
        "ekfac": {"damping": 0.1, "T_scale": 3},
    }
