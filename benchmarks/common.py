"""Helpers shared by the benchmark scripts: BLAS threads and the machine header.

The scripts run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path`` and ``from common import ...`` finds this module.  They time the
kfac_ref of the checkout they are in: its root goes first on ``sys.path``, before
any kfac_ref installed in the environment (e.g. another checkout's editable install).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kfac_ref  # noqa: E402
import kfac_ref.backend  # noqa: E402
from kfac_ref.malloc import tune_malloc  # noqa: E402,F401  (the scripts' --tune-malloc)

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def blas_threads() -> tuple[int, str]:
    """The number of threads NumPy's BLAS uses, and where that number comes from."""
    infos = [p for p in threadpool_info() if p["user_api"] == "blas"]
    # Prefer NumPy's own BLAS over SciPy's (both may be loaded).
    numpy_blas = [p for p in infos if "numpy" in p["filepath"].replace("\\", "/").split("site-packages/")[-1]]
    blas = numpy_blas or infos
    if blas:
        return int(blas[0]["num_threads"]), f"threadpoolctl ({blas[0]['internal_api']})"
    for var in THREAD_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var]), f"${var}"
    return os.cpu_count() or 1, "os.cpu_count()"


def limit_blas_threads(n: int):
    """Limit every BLAS to n threads; returns the limiter (keep it alive).

    threadpoolctl limits only the libraries already loaded: SciPy's own BLAS (its triangular
    solves, in every K-FAC refresh) is loaded first, else it would keep one thread per core.
    """
    import scipy.linalg  # noqa: F401

    return threadpool_limits(limits=n, user_api="blas")


def machine_info(device: str) -> dict:
    """What the numbers were measured on (printed and saved with every benchmark)."""
    threads, blas = blas_threads()
    info = {
        "kfac_ref": kfac_ref.__version__,
        "kfac_ref_path": str(Path(kfac_ref.__file__).resolve().parent),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "blas": blas,
        "blas_threads": threads,
        "device": device,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    if device == "gpu":
        info["gpu"] = kfac_ref.backend.gpu_name()
    return info
