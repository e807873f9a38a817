"""Bad input gets a clear error naming what was wrong; the backend follows the arrays."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import backend, models, nn


def test_linear_shape_error_names_the_layer():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(ValueError, match=r"Linear\(64→32\): input has shape \(5, 63\), expected \(N, 64\)"):
        model(np.zeros((5, 63)))


def test_conv_shape_errors_name_the_layer():
    conv = nn.Conv2d(3, 8, 3)
    with pytest.raises(ValueError, match=r"Conv2d\(3→8, 3×3\).*expected \(3, H, W\)"):
        conv(np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="expected \\(N, 3, H, W\\)"):
        conv(np.zeros((2, 3, 8)))
    with pytest.raises(ValueError, match="smaller than the 3×3 kernel"):
        conv(np.zeros((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="smaller than the 2×2 window"):
        nn.MaxPool2d(2)(np.zeros((1, 1, 1, 1)))


def test_impossible_layer_arguments():
    with pytest.raises(ValueError, match="out_features must be a positive integer"):
        nn.Linear(3, 0)
    with pytest.raises(ValueError, match="padding must be ≥ 0"):
        nn.Conv2d(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match="padding must be an integer in"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(TypeError, match="expected kfac_ref.nn layers"):
        nn.Sequential(nn.Linear(2, 2), "relu")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        models.mlp(4, activation="gelu")


def test_nan_and_inf_inputs_are_refused():
    model = models.mlp(4, hidden=(3,), num_classes=2)
    x = np.zeros((3, 4))
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN/Inf value\(s\)"):
        model(x)
    with pytest.raises(ValueError, match="NaN/Inf"):
        K.batch_grad(model, nn.CrossEntropyLoss(), x, np.zeros(3, dtype=int))
    with pytest.raises(TypeError, match="floating point"):
        model(np.zeros((3, 4), dtype=np.int64))


def test_batch_size_mismatch():
    model = models.mlp(4, hidden=(3,), num_classes=2)
    with pytest.raises(ValueError, match="inputs have 3 samples but targets have 2"):
        K.per_sample_grads(model, nn.CrossEntropyLoss(), np.zeros((3, 4)), np.zeros(2, dtype=int))


def test_backend_follows_the_arrays():
    assert backend.get_xp(np.zeros(2), None, 1.0) is np
    assert backend.get_xp() is np
    assert backend.device_of(np.zeros(1)) == "cpu"
    a = np.arange(3.0)
    assert backend.to_numpy(a) is a
    assert backend.to_device(a, "cpu") is a
    backend.synchronize(a)  # a no-op on NumPy
    backend.synchronize(np)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backend.check_device("tpu")
    with pytest.raises(TypeError, match="expected a NumPy or CuPy array"):
        backend.get_xp([1, 2])


def test_gpu_request_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "_gpu_usable", "device='gpu' needs CuPy, which is not installed")
    with pytest.raises(RuntimeError, match="device='gpu'"):
        backend.to_device(np.zeros(2), "gpu")
    with pytest.raises(RuntimeError, match="device='gpu'"):
        models.mlp(4, device="gpu")


def test_gpu_model_gives_the_same_numbers_as_cpu(device, rng):
    """The same code and seed on both backends (float64): equal to rounding."""
    model = models.convnet().to(device)
    x = rng.standard_normal((6, 1, 8, 8))
    y = rng.integers(0, 10, size=6)
    g = K.batch_grad(model, nn.CrossEntropyLoss(), backend.to_device(x, device), backend.to_device(y, device))
    ref = K.batch_grad(models.convnet(), nn.CrossEntropyLoss(), x, y)
    np.testing.assert_allclose(backend.to_numpy(g), ref, rtol=1e-10, atol=1e-13)


def test_float32_models_stay_float32(rng):
    model = models.convnet(dtype=np.float32)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    assert model(x).dtype == np.float32
    assert K.batch_grad(model, nn.CrossEntropyLoss(), x, np.arange(4)).dtype == np.float32
