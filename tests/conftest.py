"""Shared fixtures: the backends to run on, and small seeded models and batches.

The 'gpu' device runs on real CuPy where it can use a GPU.  Elsewhere (CI, a
laptop) it runs on the strict stand-in of CuPy in ``tests/fake_cupy.py``, so
the GPU code path — no implicit host/device conversion, no NumPy operands, 0-d
reductions, silent linalg — is tested everywhere.  KFAC_REF_REAL_GPU=1 forbids
the stand-in (``make gpu-check``): the 'gpu' tests then fail without a GPU.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from kfac_ref import backend

# The CLI tests run `kfac-ref` in this process: leave its malloc as pytest found it (kfac_ref.malloc;
# tests/test_malloc.py checks the setting in a process of its own).
os.environ.setdefault("KFAC_REF_MALLOC", "system")

REAL_GPU = backend.gpu_available()
if not REAL_GPU and os.environ.get("KFAC_REF_REAL_GPU") != "1":
    from tests import fake_cupy

    backend._gpu_modules = (fake_cupy.cupy, fake_cupy.cupyx)  # the one hook backend.py offers
    backend._gpu_usable = None  # probe again, now on the stand-in
    STANDIN = backend.gpu_available()
else:
    STANDIN = False


def _gpu_reason():
    return backend.gpu_unavailable_reason() or "no usable GPU"


def pytest_report_header(config):
    if REAL_GPU:
        return "device 'gpu': real CuPy"
    return "device 'gpu': the CuPy stand-in (tests/fake_cupy.py)" if STANDIN else f"device 'gpu': {_gpu_reason()}"


DEVICES = [
    "cpu",
    pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(not backend.gpu_available(), reason=_gpu_reason())]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """Every backend: 'cpu' (NumPy), and 'gpu' (real CuPy, or the stand-in without a GPU)."""
    return request.param


@pytest.fixture
def standin():
    """The CuPy stand-in module with its counters reset; skips on real CuPy."""
    if not STANDIN:
        pytest.skip("needs the CuPy stand-in (this run uses real CuPy or has none)")
    from tests import fake_cupy

    fake_cupy.COUNTS.reset()
    return fake_cupy


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
