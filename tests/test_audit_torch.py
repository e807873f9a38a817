"""A K-FAC written in PyTorch (examples/check_kfac_pytorch.py) against the reference bundle.

The correct version agrees with every key; each deliberately mistaken version is diagnosed by
name.  Skipped where torch is not installed (it is not a dependency of kfac_ref).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kfac_ref import models, nn  # noqa: E402
from kfac_ref.audit import Reference, audit_arrays, build_bundle, write_bundle  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "check_kfac_pytorch.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("check_kfac_pytorch", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(tmp_path_factory, model_name, loss="ce", kind="exact"):
    rng = np.random.default_rng(5)
    n = 7  # not a number of locations (36, 9), nor their square: N² = T² would be ambiguous
    if model_name == "mlp":
        model, x = models.mlp(6, (5,), 4, seed=2), rng.standard_normal((n, 6))
    else:
        model, x = models.convnet((1, 6, 6), (2, 3), 5, 4, seed=2), rng.standard_normal((n, 1, 6, 6))
    labels = rng.integers(0, 4, n)
    loss_fn, y = (nn.CrossEntropyLoss(), labels) if loss == "ce" else (nn.SquaredErrorLoss(), np.eye(4)[labels])
    out = tmp_path_factory.mktemp(f"{model_name}-{loss}-{kind}")
    write_bundle(out, *build_bundle(model, loss_fn, x, y, kind=kind, damping=0.03, seed=1))
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return {m: _write(tmp_path_factory, m) for m in ("mlp", "convnet")}


def test_the_guide_example_runs_end_to_end(example, bundles, tmp_path, capsys):
    """Rebuild in PyTorch, compute with hooks, write THEIRS.npz, run `kfac-ref audit`: exit 0."""
    out = tmp_path / "THEIRS.npz"
    assert example.main([str(bundles["convnet"]), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
@pytest.mark.parametrize("setting", [("ce", "exact"), ("ce", "mc"), ("mse", "empirical"), ("mse", "exact")])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_correct_pytorch_kfac_agrees(example, tmp_path_factory, model_name, setting, dtype):
    path = _write(tmp_path_factory, model_name, *setting)
    theirs = example.theirs(path, "none", getattr(torch, dtype))
    assert theirs["grad"].dtype == np.dtype(dtype)
    results = audit_arrays(Reference(path), theirs)
    assert len(results) >= 7 and all(r.status == "ok" for r in results), [r for r in results if r.status != "ok"]


MISTAKES = {
    "empirical": "fisher-kind",
    "mean-loss": "loss-mean-scale",
    "kron-order": "kron-order",
    "locations": "conv-locations",
    "bias-first": "bias-coordinate",
    "no-pi": "pi-omitted",
    "damping-lambda": "damping-form",
    "weight-layout": "weight-layout",
}


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistaken_pytorch_kfac_is_diagnosed_by_name(example, bundles, model_name, mistake):
    if mistake == "locations" and model_name == "mlp":
        pytest.skip("an MLP has one location per layer: nothing to get wrong")
    theirs = example.theirs(bundles[model_name], mistake)
    results = audit_arrays(Reference(bundles[model_name]), theirs)
    bad = [r for r in results if r.status == "mismatch"]
    assert bad, "the mistake changed nothing"
    for r in bad:
        assert r.diagnoses == [MISTAKES[mistake]], (r.key, r.diagnoses, r.candidates)


def test_float32_pytorch_mistake_is_still_named(example, bundles):
    theirs = example.theirs(bundles["convnet"], "no-pi", torch.float32)
    (r,) = [r for r in audit_arrays(Reference(bundles["convnet"]), theirs) if r.status == "mismatch"]
    assert r.key == "kfac_step" and r.diagnoses == ["pi-omitted"]
