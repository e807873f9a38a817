"""Shared fixtures: the backends to run on, and small seeded models and batches."""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref.backend import gpu_available


def _gpu_reason():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install 'kfac_ref[gpu]')"
    return "CuPy is installed but no CUDA device is usable"


DEVICES = [
    "cpu",
    pytest.param("gpu", marks=[pytest.mark.gpu,
                               pytest.mark.skipif(not gpu_available(), reason=_gpu_reason())]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """Every available backend: 'cpu' (NumPy) always, 'gpu' (CuPy) where there is one."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
