"""The GPU code path without a GPU: the CuPy stand-in's rules, linalg that raises on both
backends, float32 runs that stay float32, and the device→host syncs of one optimizer step."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

from kfac_ref import backend, fisher, models, nn, optim
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.data import Dataset
from kfac_ref.data.synthetic import make_classification
from kfac_ref.linalg import CurvatureError, cho_solve, eigh, spd_inverse
from kfac_ref.train import Trainer

CE = nn.CrossEntropyLoss()


# ---- the stand-in enforces CuPy's rules ------------------------------------------------------
def test_standin_refuses_implicit_conversion_to_numpy(standin):
    d = standin.cupy.asarray(np.arange(3.0))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(d)


def test_standin_refuses_numpy_arrays_as_operands(standin):
    d = standin.cupy.asarray(np.arange(3.0))
    for op in (lambda: d + np.ones(3), lambda: np.ones(3) * d, lambda: standin.cupy.concatenate([d, np.ones(3)])):
        with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
            op()


def test_standin_reductions_are_0d_device_arrays_and_reads_are_counted(standin):
    d = standin.cupy.asarray(np.arange(4.0))
    s = d.sum()
    assert isinstance(s, standin.cupy.ndarray) and s.shape == ()
    assert isinstance(standin.cupy.count_nonzero(d), standin.cupy.ndarray)
    standin.COUNTS.reset()
    assert float(s) == 6.0 and int(d.max()) == 3 and bool(d.min() == 0) and d[1].item() == 1.0
    assert standin.COUNTS.syncs == 4
    np.testing.assert_array_equal(to_numpy(d), np.arange(4.0))
    assert standin.COUNTS.d2h == 1


def test_standin_linalg_is_silent_unless_errstate_says_raise(standin):
    cp = standin.cupy
    m = cp.asarray(-np.eye(2))
    assert cp.linalg.cholesky(m).get()[0, 0] == -1  # CuPy's default: no error, potrf's failed pivot
    with standin.cupyx.errstate(linalg="raise"), pytest.raises(np.linalg.LinAlgError):
        cp.linalg.cholesky(m)


# ---- linalg raises on both backends -------------------------------------------------------------
def test_cholesky_of_a_non_positive_definite_matrix_raises(device):
    m = to_device(np.array([[1.0, 2.0], [2.0, 1.0]]), device)
    with pytest.raises(CurvatureError, match=r"the damped curvature matrix \(2×2\) is not positive definite"):
        cho_solve(m, to_device(np.ones(2), device))
    with pytest.raises(CurvatureError, match=r"the damped K-FAC factor \(2×2\) is not positive definite"):
        spd_inverse(m, "the damped K-FAC factor")


def test_factorising_nan_curvature_says_the_loss_diverged(device):
    m = to_device(np.array([[1.0, np.nan], [np.nan, 1.0]]), device)
    with pytest.raises(CurvatureError, match=r"contains 2 NaN/Inf value\(s\).*the loss likely diverged"):
        cho_solve(m, to_device(np.ones(2), device))
    with pytest.raises(CurvatureError, match=r"the K-FAC factor A \(2×2\) contains 2 NaN/Inf.*diverged"):
        eigh(m, "the K-FAC factor A")


def test_ngd_without_damping_says_lambda_zero_leaves_a_singular_fisher(device, rng):
    model = models.mlp(4, hidden=(6,), num_classes=3).to(device)
    x, y = to_device(rng.standard_normal((2, 4)), device), to_device(np.array([0, 2]), device)
    opt = optim.NGD(model, CE, damping=0.0)
    with pytest.raises(CurvatureError, match=r"damping λ = 0 leaves a singular Fisher.*use damping > 0"):
        opt.step(x, y)


def test_gpu_name_comes_from_the_backend(standin):
    assert backend.gpu_name() == "stand-in (NumPy)"


# ---- availability means "can multiply a matrix" -----------------------------------------------
def _broken_cupy():
    """CuPy with a driver but no cuBLAS: imports, counts devices, fails at the first matmul."""

    class Arr:
        def __mul__(self, other):
            return self

        def __matmul__(self, other):
            raise OSError("libcublasLt.so.12: cannot open shared object file: No such file or directory")

    cp = types.SimpleNamespace(
        ndarray=Arr,
        float64=np.float64,
        eye=lambda n, dtype=None: Arr(),
        linalg=types.SimpleNamespace(cholesky=lambda a: a),
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)),
    )
    return cp, types.SimpleNamespace()


def test_gpu_without_cublas_is_unavailable_with_a_one_line_reason(monkeypatch):
    monkeypatch.setattr(backend, "_gpu_modules", _broken_cupy())
    monkeypatch.setattr(backend, "_gpu_usable", None)
    assert not backend.gpu_available()
    reason = backend.gpu_unavailable_reason()
    assert "\n" not in reason
    with pytest.raises(
        RuntimeError,
        match=r"device='gpu': CuPy sees 1 CUDA device\(s\) but cannot multiply a "
        r"matrix on it \(OSError: libcublasLt.so.12.*cupy-cuda12x\[ctk\]",
    ):
        models.mlp(4, device="gpu")


# ---- float32 runs stay float32 ------------------------------------------------------------------
def _arrays(obj):
    """Every array held by an optimizer's state (factors, inverses, buffers), recursively."""
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return []
    if hasattr(obj, "dtype") and hasattr(obj, "shape"):
        return [obj]
    if dataclasses.is_dataclass(obj):
        return [a for f in dataclasses.fields(obj) for a in _arrays(getattr(obj, f.name))]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in _arrays(v)]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _arrays(v)]
    return []


FLOAT32_OPTS = {
    "sgd": lambda m: optim.SGD(m, CE, lr=0.1, momentum=0.9, nesterov=True),
    "ngd-mc": lambda m: optim.NGD(m, CE, kind="mc", momentum=0.5, ema_decay=0.5),
    "ngd-woodbury": lambda m: optim.NGD(m, CE, solver="woodbury", kind="exact", momentum=0.5),
    "block-ngd": lambda m: optim.BlockNGD(m, CE, kind="exact", ema_decay=0.5),
    "kfac-mc": lambda m: optim.KFAC(m, CE, kind="mc", T_inv=2),
    "kfac-exact-eigen": lambda m: optim.KFAC(m, CE, kind="exact", T_inv=2, damping_mode="exact"),
    "kfac-rescale": lambda m: optim.KFAC(m, CE, kind="mc", T_inv=2, rescale=True, kl_clip=None, momentum=0.0),
    "kfac-adapt": lambda m: optim.KFAC(m, CE, kind="exact", T_inv=2, adapt_damping=True, T_adapt=1),
}
STATE = ("velocity", "fisher", "blocks", "factors", "inverses", "prev_delta")


@pytest.mark.parametrize("name", sorted(FLOAT32_OPTS))
def test_a_float32_run_stays_float32(name, device, rng):
    model = models.mlp(5, hidden=(6,), num_classes=3, dtype=np.float32).to(device)
    opt = FLOAT32_OPTS[name](model)
    x = to_device(rng.standard_normal((8, 5)).astype(np.float32), device)
    y = to_device(rng.integers(0, 3, size=8), device)
    r = np.random.default_rng(0)
    for _ in range(4):
        opt.step(x, y, r)
    held = {k: _arrays(getattr(opt, k, None)) for k in STATE}
    assert sum(map(len, held.values())) > 0 or name == "sgd"
    wrong = {k: sorted({str(a.dtype) for a in v} - {"float32"}) for k, v in held.items()}
    wrong = {k: v for k, v in wrong.items() if v}
    wrong.update(
        {
            f"param {n}": str(a.dtype)
            for layer in model.param_layers()
            for n, a in layer.params()
            if a.dtype != np.float32
        }
    )
    assert not wrong, f"float64 crept into a float32 run: {wrong}"


@pytest.mark.parametrize("kind", ["exact", "mc", "empirical"])
def test_float32_seeds_are_float32(kind, device, rng):
    f = to_device(rng.standard_normal((4, 3)).astype(np.float32), device)
    y = to_device(np.array([0, 1, 2, 0]), device)
    seeds = fisher.fisher_seeds(CE, f, y, kind, np.random.default_rng(0), 3 if kind == "mc" else 1)
    assert seeds.dtype == np.float32


# ---- what crosses between host and device -------------------------------------------------------
def test_quadratic_form_returns_a_float(device, rng):
    model = models.mlp(4, hidden=(3,), num_classes=2).to(device)
    x, y = to_device(rng.standard_normal((5, 4)), device), to_device(rng.integers(0, 2, 5), device)
    v = to_device(rng.standard_normal(model.num_params), device)
    q = fisher.quadratic_form(model, CE, x, y, v, v, "exact")
    assert type(q) is float and q > 0


# syncs per step measured on the stand-in (MLP 5-8-3, batch 16): see the report in the branch
SYNC_BOUNDS = {
    "sgd": (lambda m: optim.SGD(m, CE), 5),  # input check, loss check, h, θ check, ‖δ‖
    "ngd": (lambda m: optim.NGD(m, CE, kind="mc"), 8),  # + seed check, 1 Cholesky check, KL-clip ν
    "block-ngd": (lambda m: optim.BlockNGD(m, CE), 9),  # + 1 Cholesky check per layer (2), KL-clip ν
    "kfac": (lambda m: optim.KFAC(m, CE, kind="mc", T_inv=1), 30),  # generous: the lead tightens it
}


@pytest.mark.parametrize("name", sorted(SYNC_BOUNDS))
def test_device_to_host_syncs_per_step_are_bounded(name, standin, rng):
    make, bound = SYNC_BOUNDS[name]
    opt = make(models.mlp(5, hidden=(8,), num_classes=3).to("gpu"))
    x, y = to_device(rng.standard_normal((16, 5)), "gpu"), to_device(rng.integers(0, 3, 16), "gpu")
    r = np.random.default_rng(0)
    opt.step(x, y, r)
    opt.step(x, y, r)
    standin.COUNTS.reset()
    opt.step(x, y, r)
    counts = standin.COUNTS
    print(f"{name}: {counts.snapshot()} from {sorted(set(counts.where))}")
    assert counts.syncs <= bound, f"{name}: {counts.syncs} syncs per step (bound {bound}): {counts.where}"
    assert counts.d2h == 0  # no array is copied back during a step


def test_the_trainer_copies_batch_indices_to_the_device_once_per_epoch(standin):
    x, y = make_classification(48, 5, 3, np.random.default_rng(0))
    data = Dataset("toy", x[:40], y[:40], x[40:], y[40:], num_classes=3).to("gpu")
    trainer = Trainer(
        optim.SGD(models.mlp(5, hidden=(4,), num_classes=3).to("gpu"), CE),
        data,
        8,
        np.random.default_rng(0),
        eval_every=100,
    )
    trainer.run(1)  # the starting evaluation and the first batch
    standin.COUNTS.reset()
    trainer.run(5)  # four more batches, all from the first epoch (5 batches of 8)
    assert standin.COUNTS.h2d == 0
    trainer.run(6)  # a new epoch: its order crosses once
    assert standin.COUNTS.h2d == 1
