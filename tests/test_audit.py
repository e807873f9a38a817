"""The audit names each classic K-FAC mistake, and only when it reproduces their array exactly.

Each mistake is applied here to the reference arrays by its own formula (written out below with
NumPy, independently of kfac_ref.audit), on a small MLP and a small ConvNet, with the arrays handed
in as float64 and as float32.  Controls: the correct arrays agree; a random perturbation is
unexplained; two mistakes at once are both named or unexplained, never one wrong name.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kfac_ref import models, nn
from kfac_ref.audit import AuditInputError, Reference, audit_arrays, build_bundle, write_bundle
from kfac_ref.audit.audit import CODES

N = 7


def _problem(model_name: str, loss: str):
    rng = np.random.default_rng(3)
    if model_name == "mlp":
        model = models.mlp(6, (5,), 3, seed=1)
        x = rng.standard_normal((N, 6))
    else:  # Conv2d(1→2, 3×3, pad 1) on 6×6: T = 36; after pooling, Conv2d(2→3) on 3×3: T = 9
        model = models.convnet((1, 6, 6), (2, 3), 4, 3, seed=1)
        x = rng.standard_normal((N, 1, 6, 6))
    labels = rng.integers(0, 3, N)
    if loss == "mse":
        return model, nn.SquaredErrorLoss(), x, np.eye(3)[labels] + 0.1 * rng.standard_normal((N, 3))
    return model, nn.CrossEntropyLoss(), x, labels


_CACHE: dict = {}


def bundle(tmp_path_factory, model_name: str, loss: str = "ce", kind: str = "exact") -> Reference:
    key = (model_name, loss, kind)
    if key not in _CACHE:
        out = tmp_path_factory.mktemp(f"bundle-{model_name}-{loss}-{kind}")
        spec, arrays = build_bundle(*_problem(model_name, loss), kind=kind, damping=0.05, seed=2)
        write_bundle(out, spec, arrays)
        _CACHE[key] = Reference(out)
    return _CACHE[key]


# ---- the mistakes, written out independently --------------------------------------------


def layer_mats(ref: Reference, flat):
    """Per layer [W | b] (d_out, a_dim) from a θ-order vector."""
    out = []
    for p in ref.spec["parameters"]:
        lo, hi = p["theta"]
        w = flat[lo:hi][: math.prod(p["weight"])].reshape(p["weight"][0], -1)
        out.append(np.hstack([w, flat[lo:hi][math.prod(p["weight"]) :, None]]))
    return out


def to_flat(mats):
    return np.concatenate([np.concatenate([m[:, :-1].ravel(), m[:, -1]]) for m in mats])


def step(ref: Reference, *, pi=True, root=True, g_of=None):
    """−(⊕ damped G ⊗ A)⁻¹ ∇h, the damping as in docs/math.md §6.1 unless told otherwise."""
    lam = ref.damping
    d = math.sqrt(lam) if root else lam
    out = []
    for p, v in zip(ref.spec["parameters"], layer_mats(ref, ref.arrays["grad"])):
        a = ref.arrays[f"A/{p['name']}"]
        g = g_of(p["name"]) if g_of else ref.arrays[f"G/{p['name']}"]
        q = math.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g))) if pi else 1.0
        ad, gd = a + q * d * np.eye(len(a)), g + d / q * np.eye(len(g))
        out.append(-np.linalg.inv(gd) @ v @ np.linalg.inv(ad))
    return to_flat(out)


def theta_perm(p) -> np.ndarray:
    """perm with vec([W | b]) (row-major) = θ_layer[perm]."""
    d_out, nw = p["weight"][0], math.prod(p["weight"])
    w = np.arange(nw).reshape(d_out, -1)
    return np.hstack([w, np.arange(nw, nw + d_out)[:, None]]).ravel()


def in_theta(p, block):
    perm = theta_perm(p)
    out = np.empty_like(block)
    out[np.ix_(perm, perm)] = block
    return out


def transposed_weights(ref: Reference, flat):
    """θ with every layer's weight stored (in, out) (Linear) or (in, out, kh, kw) (Conv2d)."""
    parts = []
    for p in ref.spec["parameters"]:
        lo, hi = p["theta"]
        nw = math.prod(p["weight"])
        w = flat[lo:hi][:nw].reshape(p["weight"])
        w = w.T if w.ndim == 2 else w.transpose(1, 0, 2, 3)
        parts += [w.ravel(), flat[lo:hi][nw:]]
    return np.concatenate(parts)


def mistake(ref: Reference, code: str) -> dict:
    """THEIRS for one mistake: {key: array}, every key of which the audit must diagnose as ``code``."""
    b, n = ref.arrays, ref.n
    first = ref.spec["parameters"][0]
    l0 = first["name"]
    if code == "loss-mean-scale":
        return {f"G/{l0}": b[f"G/{l0}"] / n**2, "F/exact": ref.get("F/exact") / n**2}
    if code == "mse-half":  # ℓ = ‖f − y‖²: ∇h doubles, the GGN's Λ = 2I doubles G and F
        return {"grad": 2 * b["grad"], f"G/{l0}": 2 * b[f"G/{l0}"], "F/exact": 2 * ref.get("F/exact")}
    if code == "conv-locations":  # Ω as a mean over locations, Γ as a sum
        t = first["locations"]
        return {f"A/{l0}": b[f"A/{l0}"] / t, f"G/{l0}": b[f"G/{l0}"] * t**2}
    if code == "kron-order":
        a, g = b[f"A/{l0}"], b[f"G/{l0}"]
        return {f"A/{l0}": g, f"G/{l0}": a, f"KFAC/{l0}": in_theta(first, np.kron(a, g))}
    if code == "fisher-kind":
        v = b["V/empirical"]
        return {
            f"G/{l0}": b[f"kinds/empirical/G/{l0}"],
            "F/exact": v.T @ v / n,
            "kfac_step": step(ref, g_of=lambda nm: b[f"kinds/empirical/G/{nm}"]),
        }
    if code == "bias-coordinate":
        a = b[f"A/{l0}"]
        return {
            f"A/{l0}": a[:-1, :-1],
            f"A/{ref.spec['parameters'][1]['name']}": np.roll(
                b[f"A/{ref.spec['parameters'][1]['name']}"], 1, axis=(0, 1)
            ),
        }
    if code == "pi-omitted":
        return {"kfac_step": step(ref, pi=False)}
    if code == "damping-form":
        return {"kfac_step": step(ref, root=False)}
    if code == "weight-layout":
        w = b[f"{l0}.weight"]
        return {
            f"{l0}.weight": w.T if w.ndim == 2 else w.transpose(1, 0, 2, 3),
            "grad": transposed_weights(ref, b["grad"]),
            "kfac_step": transposed_weights(ref, b["kfac_step"]),
        }
    raise AssertionError(code)


CASES = [(c, m) for c in CODES for m in ("mlp", "convnet") if not (c == "conv-locations" and m == "mlp")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("code", "model_name"), CASES)
def test_each_mistake_is_named_exactly(tmp_path_factory, code, model_name, dtype):
    ref = bundle(tmp_path_factory, model_name, "mse" if code == "mse-half" else "ce")
    theirs = {k: v.astype(dtype) for k, v in mistake(ref, code).items()}
    results = audit_arrays(ref, theirs)
    assert [r.key for r in results] == list(theirs)
    for r in results:
        assert r.status == "mismatch", r
        assert r.diagnoses == [code], (r.key, r.diagnoses, r.candidates)
        assert r.as_dict()["diagnosis"] == code


def test_step_mistakes_are_real_mismatches(tmp_path_factory):
    """π and the damping form change the step by far more than the tolerance (else the test above proves little)."""
    ref = bundle(tmp_path_factory, "convnet")
    good = ref.arrays["kfac_step"]
    assert np.allclose(step(ref), good, rtol=1e-10, atol=1e-12)  # the independent formula is the bundle's
    for wrong in (step(ref, pi=False), step(ref, root=False)):
        assert np.linalg.norm(wrong - good) / np.linalg.norm(good) > 1e-2


def test_mse_half_empirical_kind_is_off_by_four(tmp_path_factory):
    """With sampled or data labels the squared gradients carry 2², not 2."""
    ref = bundle(tmp_path_factory, "mlp", "mse", "empirical")
    (r,) = audit_arrays(ref, {"G/0": 4 * ref.arrays["G/0"]})
    assert r.diagnoses == ["mse-half"]


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_correct_arrays_agree(tmp_path_factory, model_name, dtype):
    ref = bundle(tmp_path_factory, model_name)
    keys = [k for k in ref.arrays if not k.startswith(("kinds/", "V/"))] + ["F/mc", "F/empirical"]
    keys += [f"KFAC/{nm}" for nm in ref.names] + [f"F/exact/{nm}" for nm in ref.names]
    theirs = {k: np.asarray(ref.get(k)).astype(dtype) if k not in ("y", "y_mc") else ref.get(k) for k in keys}
    # an independent dense block: slice of F
    lo, hi = ref.spec["parameters"][0]["theta"]
    theirs[f"F/exact/{ref.names[0]}"] = ref.get("F/exact")[lo:hi, lo:hi].astype(dtype)
    # KFAC block formed the textbook way: kron(G, A) in vec([W | b]) order, put into θ order
    p0 = ref.spec["parameters"][0]
    theirs[f"KFAC/{p0['name']}"] = in_theta(p0, np.kron(ref.arrays[f"G/{p0['name']}"], ref.arrays[f"A/{p0['name']}"]))
    results = audit_arrays(ref, theirs)
    assert all(r.status == "ok" for r in results), [r for r in results if r.status != "ok"]


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_random_perturbation_is_unexplained(tmp_path_factory, model_name):
    ref = bundle(tmp_path_factory, model_name)
    rng = np.random.default_rng(0)
    theirs = {}
    for k in ("A/0", "G/0", "grad", "kfac_step", "ngd_step", "F/exact"):
        v = ref.get(k)
        theirs[k] = v + 0.05 * np.linalg.norm(v) / math.sqrt(v.size) * rng.standard_normal(v.shape)
    theirs["G/0"] = (theirs["G/0"] + theirs["G/0"].T) / 2
    for r in audit_arrays(ref, theirs):
        assert r.status == "mismatch" and r.diagnoses == [] and r.diagnosis is None, r


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_two_mistakes_are_both_named_or_unexplained(tmp_path_factory, model_name):
    ref = bundle(tmp_path_factory, model_name)
    b, n = ref.arrays, ref.n
    emp = lambda nm: b[f"kinds/empirical/G/{nm}"] / n**2  # noqa: E731
    theirs = {
        "G/0": b["kinds/empirical/G/0"] / n**2,  # empirical and the mean loss's 1/N²: one key, two mistakes
        "kfac_step": step(ref, pi=False, g_of=lambda nm: b[f"kinds/empirical/G/{nm}"]),  # empirical, no π
        "ngd_step": b["ngd_step"] * 1.5,  # not a known mistake
    }
    results = {r.key: r for r in audit_arrays(ref, theirs)}
    assert results["G/0"].diagnoses == ["fisher-kind", "loss-mean-scale"]
    assert results["G/0"].diagnosis == "fisher-kind+loss-mean-scale"
    assert results["kfac_step"].diagnoses in (["fisher-kind", "pi-omitted"], [])
    assert results["ngd_step"].diagnoses == []
    # the step of two mistakes that the rules do not pair: never one of them alone
    (r,) = audit_arrays(ref, {"kfac_step": step(ref, pi=False, root=False, g_of=emp)})
    assert r.status == "mismatch"
    assert len(r.diagnoses) != 1, r.diagnoses


def test_ambiguous_factor_is_not_forced(tmp_path_factory):
    """G × 4 with N = 2 is either the mean loss's N² or the missing ½ twice: both fit, so neither is named."""
    out = tmp_path_factory.mktemp("n2")
    model, loss, x, y = _problem("mlp", "mse")
    write_bundle(out, *build_bundle(model, loss, x[:2], y[:2], damping=0.05))
    ref = Reference(out)
    (r,) = audit_arrays(ref, {"G/0": ref.arrays["G/0"] * 4})
    assert r.status == "mismatch" and r.diagnoses == []
    assert ["loss-mean-scale"] in r.candidates and ["mse-half"] in r.candidates


def test_unknown_key_is_refused_with_its_name(tmp_path_factory):
    ref = bundle(tmp_path_factory, "mlp")
    with pytest.raises(AuditInputError, match=r"'A/1' is not a key of the bundle.*layer names: 0, 2"):
        audit_arrays(ref, {"A/1": np.eye(3)})


def test_fisher_kind_names_which(tmp_path_factory):
    ref = bundle(tmp_path_factory, "mlp", kind="mc")
    (r,) = audit_arrays(ref, {"G/2": ref.arrays["kinds/exact/G/2"]})
    assert r.diagnoses == ["fisher-kind"]
    assert "exact Fisher where the Monte-Carlo" in r.notes[0]


def test_strided_convolution_factor_off_by_stride_squared(tmp_path):
    """Any Sequential from Python; a factor scaled by stride² (not T) is the location scaling gone wrong."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3), seed=0)
    rng = np.random.default_rng(0)
    spec, arrays = build_bundle(model, nn.CrossEntropyLoss(), rng.standard_normal((N, 1, 6, 6)), rng.integers(0, 3, N))
    assert spec["parameters"][0]["locations"] == 9 and spec["layers"][0]["stride"] == 2
    write_bundle(tmp_path, spec, arrays)
    ref = Reference(tmp_path)
    results = audit_arrays(ref, {"G/0": arrays["G/0"] * 4, "A/0": arrays["A/0"] / 9})
    assert [r.diagnoses for r in results] == [["conv-locations"], ["conv-locations"]]
    assert "stride²" in results[0].notes[0]


def test_mse_gradient_without_the_half_doubles_the_step(tmp_path_factory):
    """∇h of ‖f − y‖² is twice ∇h of ½‖f − y‖²; the step is linear in ∇h, so it doubles too."""
    ref = bundle(tmp_path_factory, "convnet", "mse")
    results = audit_arrays(ref, {"kfac_step": 2 * ref.arrays["kfac_step"], "loss": 2 * ref.arrays["loss"]})
    assert [r.diagnoses for r in results] == [["mse-half"], ["mse-half"]]


def test_two_mistakes_in_one_file_and_in_one_factor(tmp_path_factory):
    ref = bundle(tmp_path_factory, "convnet")
    b = ref.arrays
    t = ref.locations("0")
    theirs = {
        "A/0": b["A/0"][:-1, :-1] / t,  # no homogeneous coordinate and averaged over locations: one array, two codes
        "A/3": b["A/3"][:-1, :-1],  # the homogeneous coordinate missing ...
        "G/3": b["kinds/mc/G/3"],  # ... and, in another key, the Monte-Carlo Fisher
    }
    results = {r.key: r for r in audit_arrays(ref, theirs)}
    assert results["A/0"].diagnoses == ["bias-coordinate", "conv-locations"]
    assert results["A/3"].diagnoses == ["bias-coordinate"]
    assert results["G/3"].diagnoses == ["fisher-kind"]
    assert "Monte-Carlo" in results["G/3"].notes[0]
