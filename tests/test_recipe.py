"""kfac_ref.experiments.recipe: the ablation's configurations, the runner's logged infos, the cost model.

References: the optimizer's own attributes (each configuration builds what it names),
compare.DEFAULT_SETTINGS, compare.run_one without infos, means of hand-written phase times,
the training clock, FLOP counts written out by hand.
"""

from __future__ import annotations

import pytest

from kfac_ref import models, nn
from kfac_ref.backend import to_numpy
from kfac_ref.experiments import compare, recipe, sizes
from kfac_ref.optim import KFAC, PHASES
from kfac_ref.params import get_flat_params


@pytest.fixture(scope="module")
def setup():
    cfg = compare.CompareConfig(model="mlp", hidden=(6,), batch_size=64, eval_every=4, max_train=300)
    data = compare.load_data(cfg)
    theta0 = to_numpy(get_flat_params(compare.build_model(cfg, data)))
    return cfg, data, theta0


def test_every_configuration_builds_exactly_the_kfac_it_names(setup):
    cfg, data, _ = setup
    for c in recipe.ablation(damping=0.05, plain_lr=0.2):
        opt = KFAC(compare.build_model(cfg, data), nn.CrossEntropyLoss(), **c.settings)
        hyper = opt.hyper()
        for key, value in c.settings.items():
            assert hyper[key] == value, (c.name, key)
        assert opt.damping == 0.05 and opt.lr == c.settings["lr"]


def test_each_rung_changes_its_parent_in_the_named_keys_only():
    configs = {c.name: c for c in recipe.ablation(plain_lr=0.2)}
    assert len(configs) == 8
    for c in configs.values():
        if c.parent is None:
            assert c.changed == ()
            continue
        parent = configs[c.parent].settings
        assert set(parent) == set(c.settings)
        differ = {k for k in c.settings if c.settings[k] != parent[k]}
        assert differ == set(c.changed) and len(differ) == 1, c.name


def test_the_ladder_passes_through_the_amortised_kfac_and_ends_at_compares():
    default = compare.DEFAULT_SETTINGS["kfac"]
    configs = {c.name: c.settings for c in recipe.ablation()}
    assert configs["§7 rescale + LM"] == default  # compare's K-FAC: [MG15] §6–7
    assert default["rescale"] and default["adapt_damping"] and default["kl_clip"] is None
    amortised = {**default, "momentum": 0.9, "kl_clip": 1e-3, "rescale": False, "adapt_damping": False}
    assert configs["amortised K-FAC"] == amortised == {**default, **compare.AMORTISED_KFAC}
    assert configs["+ LM"] == {**amortised, "adapt_damping": True}
    plain = configs["plain, η = 1"]
    assert plain["momentum"] == 0 and plain["kl_clip"] is None and not plain["rescale"]
    assert plain["lr"] == default["lr"] and plain["T_inv"] == default["T_inv"] == 10


def test_keeping_the_infos_takes_the_same_steps_as_without(setup):
    cfg, data, theta0 = setup
    settings = compare.settings_for(cfg, "kfac")
    ref = compare.run_one(cfg, "kfac", settings, data, theta0, 12)
    run = compare.run_one(cfg, "kfac", settings, data, theta0, 12, infos=True)
    for key in ("train_loss", "val_loss", "batch_loss", "val_acc"):
        assert [r[key] for r in run["records"]] == [r[key] for r in ref["records"]], key
    assert len(run["infos"]) == 12
    assert [i["loss"] for i in run["infos"]] == [r["batch_loss"] for r in ref["records"][1:]]


def test_same_seed_same_numbers_and_the_lm_damping_moves_only_every_T_adapt_steps(setup):
    cfg, data, theta0 = setup
    s = {
        **compare.settings_for(cfg, "kfac"),
        "momentum": 0.0,
        "kl_clip": None,
        "rescale": True,
        "adapt_damping": True,
        "damping": 1.0,
    }
    a = compare.run_one(cfg, "kfac", s, data, theta0, 15, infos=True)
    b = compare.run_one(cfg, "kfac", s, data, theta0, 15, infos=True)
    for key in ("loss", "damping", "alpha", "mu", "rho", "step_norm"):
        assert [i[key] for i in a["infos"]] == [i[key] for i in b["infos"]], key
    lam = [1.0] + [i["damping"] for i in a["infos"]]
    moved = [k for k in range(15) if lam[k + 1] != lam[k]]
    assert moved and all((k + 1) % 5 == 0 for k in moved)  # T_adapt = 5
    rho_steps = [k for k, i in enumerate(a["infos"]) if i["rho"] is not None]
    assert rho_steps == [4, 9, 14]
    for k in rho_steps:  # the LM rule of docs/math.md §6.6, applied by hand
        rho, omega = a["infos"][k]["rho"], (19 / 20) ** 5
        want = lam[k] * omega if rho > 0.75 else lam[k] / omega if rho < 0.25 else lam[k]
        assert lam[k + 1] == pytest.approx(want, rel=1e-12)


def test_kl_clip_nu_is_logged_and_is_a_factor_at_most_one(setup):
    cfg, data, theta0 = setup
    amortised = compare.settings_for(cfg, "kfac", compare.AMORTISED_KFAC)  # the KL-clipped variant
    run = compare.run_one(cfg, "kfac", amortised, data, theta0, 6, infos=True)
    nus = [i["kl_clip_nu"] for i in run["infos"]]
    assert all(0 < nu <= 1 for nu in nus)
    assert recipe.mean_defined(nus) == pytest.approx(sum(nus) / len(nus), rel=1e-15)
    assert recipe.mean_defined([None, float("nan")]) is None


def test_phase_seconds_is_the_mean_over_the_logged_steps(setup):
    times = [{p: float(k + 1) for k, p in enumerate(PHASES)}, {p: 3.0 * (k + 1) for k, p in enumerate(PHASES)}]
    got = recipe.phase_seconds({"optimizer": "kfac", "infos": [{"times": t} for t in times]})
    assert got == {p: 2.0 * (k + 1) for k, p in enumerate(PHASES)}  # (1 + 3) / 2 times the phase's index + 1
    with pytest.raises(ValueError, match="sgd: the run has no steps"):
        recipe.phase_seconds({"optimizer": "sgd", "infos": []})


def test_the_phases_of_a_real_run_fit_inside_its_training_clock(setup):
    cfg, data, theta0 = setup
    run = compare.run_one(cfg, "kfac", compare.settings_for(cfg, "kfac"), data, theta0, 5, infos=True)
    got = recipe.phase_seconds(run)
    assert list(got) == list(PHASES) and all(v >= 0 for v in got.values())
    assert 0 < 5 * sum(got.values()) <= run["records"][-1]["seconds"]  # the clock holds the step and more


def test_flop_model_counts_by_hand():
    # conv 1→2, 3×3, no padding on 5×5: T = 9, d_in = 10, d_out = 2; linear 18+1 → 3
    model = models.conv_tanh_linear(5, out_channels=2, num_classes=3)
    rows = sizes.flop_model(model, (1, 5, 5), batch_size=4, T_cov=2, T_inv=5)
    conv, lin = rows
    assert (conv["d_in"], conv["d_out"], conv["T"]) == (10, 2, 9)
    assert (lin["d_in"], lin["d_out"], lin["T"]) == (19, 3, 1)
    assert conv["forward_backward"] == 6 * 4 * 9 * 10 * 2
    assert conv["seed_backward"] == 2 * 4 * 9 * 10 * 2 / 2
    assert conv["statistics"] == 4 * 9 * (100 + 4) / 2
    assert conv["inversion"] == (1000 + 8) / 5
    assert conv["precondition"] == 2 * 10 * 12
    assert lin["forward_backward"] == 6 * 4 * 19 * 3 and lin["statistics"] == 4 * (361 + 9) / 2
    assert sum(r["d_in"] * r["d_out"] for r in rows) == model.num_params
