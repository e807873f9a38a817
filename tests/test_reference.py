"""Reference bundles: what spec.json and bundle.npz hold, checked against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kfac_ref import fisher, models, nn
from kfac_ref.audit import build_bundle, layers_to_spec, load_state_dict, spec_to_model, state_dict
from kfac_ref.audit.reference import locations
from kfac_ref.cli import main
from kfac_ref.params import get_flat_params


def _convnet():
    return models.convnet((1, 6, 6), (2, 3), 4, 3, seed=1)


def test_spec_round_trip_rebuilds_the_same_network():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3, bias=False)
    )
    layers = layers_to_spec(model)
    assert layers[0] == {
        "type": "Conv2d",
        "in_channels": 1,
        "out_channels": 2,
        "kernel_size": 3,
        "stride": 2,
        "padding": 1,
        "bias": True,
    }
    assert layers[4] == {"type": "Linear", "in_features": 2, "out_features": 3, "bias": False}
    copy = spec_to_model(json.loads(json.dumps(layers)))
    load_state_dict(copy, state_dict(model))
    assert list(state_dict(copy)) == ["0.weight", "0.bias", "4.weight"]
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6))
    np.testing.assert_array_equal(copy(x), model(x))
    np.testing.assert_array_equal(get_flat_params(copy), get_flat_params(model))


def test_load_state_dict_refuses_a_transposed_weight():
    model = models.mlp(4, (3,), 2)
    sd = state_dict(model)
    sd["0.weight"] = sd["0.weight"].T
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 3\), expected \(3, 4\)"):
        load_state_dict(model, sd)


def test_bundle_quantities_match_independent_formulas():
    """A, G, F, the steps and the MC targets, each from its own formula (docs/math.md §3–6)."""
    model = _convnet()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 1, 6, 6)), rng.integers(0, 3, 5)
    loss = nn.CrossEntropyLoss()
    spec, b = build_bundle(model, loss, x, y, "mc", damping=0.1, seed=4)
    n, lam = 5, 0.1
    assert spec["kind"] == "mc" and spec["damping"] == lam and spec["batch_size"] == n
    assert [p["locations"] for p in spec["parameters"]] == [36, 9, 1, 1]
    assert locations(model, (1, 6, 6)) == {"0": 36, "3": 9, "7": 1, "9": 1}
    # y_mc is what kind="mc" draws with the same generator: the bundle's MC factors are kfac_ref's
    for (a, g), nm in zip(fisher.kfac_factors(model, loss, x, y, "mc", np.random.default_rng(4)), ["0", "3", "7", "9"]):
        np.testing.assert_allclose(b[f"A/{nm}"], a, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(b[f"G/{nm}"], g, rtol=1e-13, atol=1e-15)
    # F/mc from per-sample gradients at the drawn targets, by central finite differences of ℓ_n
    theta = get_flat_params(model)
    from kfac_ref.params import set_flat_params

    def per_sample_loss(t):
        set_flat_params(model, t)
        return loss.per_sample(model(x), b["y_mc"])

    eps = 1e-6
    jac = np.empty((n, theta.size))
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        jac[:, i] = (per_sample_loss(theta + e) - per_sample_loss(theta - e)) / (2 * eps)
    set_flat_params(model, theta)
    f_mc = jac.T @ jac / n
    np.testing.assert_allclose(b["F/mc"], f_mc, atol=1e-7 * np.abs(f_mc).max())
    # ngd_step = −(F + λI)⁻¹ ∇h by a plain solve
    np.testing.assert_allclose(
        b["ngd_step"], -np.linalg.solve(b["F/mc"] + lam * np.eye(theta.size), b["grad"]), rtol=1e-9
    )
    # kfac_step: block by block, the damped Kronecker product formed densely and solved
    parts = []
    for p in spec["parameters"]:
        a, g = b[f"A/{p['name']}"], b[f"G/{p['name']}"]
        pi = math.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
        k = np.kron(g + math.sqrt(lam) / pi * np.eye(len(g)), a + pi * math.sqrt(lam) * np.eye(len(a)))
        lo, hi = p["theta"]
        gv = b["grad"][lo:hi]
        nw = math.prod(p["weight"])
        wbar = np.hstack([gv[:nw].reshape(p["weight"][0], -1), gv[nw:, None]])
        s = np.linalg.solve(k, wbar.ravel()).reshape(wbar.shape)
        parts += [s[:, :-1].ravel(), s[:, -1]]
    np.testing.assert_allclose(b["kfac_step"], -np.concatenate(parts), rtol=1e-9)


def test_bundle_gradient_is_the_finite_difference_gradient():
    model = models.mlp(4, (3,), 2, seed=0)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 2, 6)
    loss = nn.CrossEntropyLoss()
    _, b = build_bundle(model, loss, x, y)
    theta = get_flat_params(model)
    from kfac_ref.params import set_flat_params

    fd = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = 1e-6
        set_flat_params(model, theta + e)
        hi = float(loss(model(x), y))
        set_flat_params(model, theta - e)
        fd[i] = (hi - float(loss(model(x), y))) / 2e-6
    set_flat_params(model, theta)
    np.testing.assert_allclose(b["grad"], fd, atol=1e-8)
    assert float(b["loss"]) == pytest.approx(float(loss(model(x), y)), rel=1e-14)


def test_float32_model_gives_a_float64_bundle():
    model = models.mlp(4, (3,), 2, seed=0, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    spec, b = build_bundle(model, nn.CrossEntropyLoss(), x, np.arange(6) % 2)
    assert all(v.dtype == np.float64 for k, v in b.items() if k not in ("y", "y_mc"))
    assert spec["keys"]["A/0"] == [5, 5]


def test_cli_reference_then_audit_exit_codes(tmp_path, capsys):
    out = tmp_path / "ref"
    argv = ["reference", "--out", str(out), "--model", "convnet", "--channels", "2,3", "--hidden", "4"]
    assert main([*argv, "--batch-size", "6"]) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["layers"][0]["type"] == "Conv2d" and spec["loss"]["type"] == "CrossEntropyLoss"
    assert "SUM over the T output locations" in spec["conventions"]["A"]
    b = np.load(out / "bundle.npz", allow_pickle=False)
    good = tmp_path / "good.npz"
    np.savez(good, **{"A/0": b["A/0"], "G/0": b["G/0"].astype(np.float32), "kfac_step": b["kfac_step"]})
    assert main(["audit", str(out), str(good), "--json", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r["status"] for r in doc["results"]] == ["ok"] * 3
    assert set(doc["results"][0]) >= {"key", "status", "rel_error", "diagnosis"}
    bad = tmp_path / "bad.npz"
    t = spec["parameters"][0]["locations"]
    assert t == 64  # 3×3 convolution with padding 1 on the 8×8 digits
    np.savez(bad, **{"G/0": b["G/0"] / t})  # Γ divided by T once more
    assert main(["audit", str(out), str(bad), "--json", str(tmp_path / "r2.json")]) == 1
    (r,) = json.loads((tmp_path / "r2.json").read_text())["results"]
    assert r["status"] == "mismatch" and r["diagnosis"] == "conv-locations"
    assert "MISMATCH  G/0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz file"),
        (lambda p: np.savez(p, **{"A/0": np.array([object()], dtype=object)}), "holds Python objects"),
        (lambda p: np.savez(p, **{"A/0": np.array(["a"])}), "expected a numeric array"),
        (lambda p: np.savez(p, **{"A/9": np.eye(2)}), "'A/9' is not a key of the bundle"),
        (lambda p: None, "does not exist"),
    ],
)
def test_bad_theirs_files_give_one_line_errors(tmp_path, capsys, make, message):
    out = tmp_path / "ref"
    assert main(["reference", "--out", str(out), "--hidden", "3", "--batch-size", "4"]) == 0
    theirs = tmp_path / "theirs.npz"
    make(theirs)
    assert main(["audit", str(out), str(theirs)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kfac-ref audit: error:") and message in err and "\n" not in err


def test_audit_without_a_bundle_names_what_is_missing(tmp_path, capsys):
    np.savez(tmp_path / "t.npz", x=np.zeros(2))
    assert main(["audit", str(tmp_path), str(tmp_path / "t.npz")]) == 1
    assert "no spec.json there" in capsys.readouterr().err
