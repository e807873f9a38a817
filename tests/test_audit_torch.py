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


def test_pytorch_weights_move_in_and_out_as_the_guide_says():
    """docs/pytorch-weights.md: parameters_to_vector is θ; state_dict names and layouts are kfac_ref's."""
    from kfac_ref.audit import layers_to_spec, load_state_dict, state_dict
    from kfac_ref.params import get_flat_params, set_flat_params

    torch.manual_seed(0)
    model = models.convnet((1, 6, 6), (2, 3), 5, 4, seed=2)
    layers = layers_to_spec(model)
    torch_model = torch.nn.Sequential(*(getattr(torch.nn, d.pop("type"))(**d) for d in layers)).double()
    assert list(torch_model.state_dict()) == list(state_dict(model))
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6))
    # in: one call, no transposing
    set_flat_params(model, torch.nn.utils.parameters_to_vector(torch_model.parameters()).detach().numpy())
    np.testing.assert_allclose(model(x), torch_model(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-14)
    load_state_dict(model, {k: v.numpy() for k, v in torch_model.state_dict().items()})
    np.testing.assert_allclose(model(x), torch_model(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-14)
    # out: kfac_ref's θ into a fresh PyTorch model
    other = models.convnet((1, 6, 6), (2, 3), 5, 4, seed=7)
    torch.nn.utils.vector_to_parameters(torch.from_numpy(get_flat_params(other)), torch_model.parameters())
    np.testing.assert_allclose(other(x), torch_model(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-14)
    # a gradient from backward() is in θ's order
    from kfac_ref.grads import batch_grad

    y = np.array([0, 3, 1])
    torch_model.zero_grad()
    torch.nn.functional.cross_entropy(torch_model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    g = torch.nn.utils.parameters_to_vector(p.grad for p in torch_model.parameters()).numpy()
    np.testing.assert_allclose(batch_grad(other, nn.CrossEntropyLoss(), x, y), g, rtol=1e-10, atol=1e-13)
